//! A tensor is a flat storage plus a layout (shape, strides, offset). This
//! example prints the layout after each view op so you can see that views
//! only change those three numbers, that broadcasting is a stride of 0, and
//! when `reshape` has to copy.
//!
//! Run:  cargo run --release --example tensor_basics
//! Book: docs/src/tensors.md. Code: tensor/src/layout.rs, tensor/src/tensor.rs.

use kiln::tensor::{DType, Layout, Tensor};

/// One line per tensor: its layout, whether it is contiguous, whether it is
/// a view (shares storage with `src`, the tensor it was made from) and its
/// elements in row-major order.
fn show(name: &str, t: &Tensor, src: &Tensor) -> anyhow::Result<()> {
    let l = t.layout();
    println!(
        "{name:<22} shape {:<9} strides {:<10} offset {:<2} contiguous {:<5} view {:<5} {:?}",
        format!("{:?}", l.shape()),
        format!("{:?}", l.strides()),
        l.offset(),
        t.is_contiguous(),
        t.shares_storage(src),
        t.to_vec::<f32>()?
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // 12 numbers in one buffer, viewed as 3 rows of 4.
    //   storage: [0 1 2 3 4 5 6 7 8 9 10 11]
    //   x[i, j] = storage[0 + 4·i + 1·j]
    let x = Tensor::arange(0.0, 12.0, 1.0, DType::F32)?.reshape(&[3, 4])?;
    println!("== views: only shape, strides and offset change");
    show("x", &x, &x)?;

    // Transpose swaps the strides: x.t()[j, i] = storage[1·j + 4·i].
    show("x.t()", &x.t()?, &x)?;

    // Narrow moves the offset and shrinks one dim: columns 1..3.
    show("x.narrow(1, 1, 2)", &x.narrow(1, 1, 2)?, &x)?;

    // Unsqueeze adds a size-1 dim; its stride does not matter.
    show("x.unsqueeze(0)", &x.unsqueeze(0)?, &x)?;

    println!("\n== broadcasting: a size-1 (or missing) dim gets stride 0");
    let bias = Tensor::from_vec(vec![100.0f32, 200.0, 300.0, 400.0], &[4])?;
    // [4] → [3, 4]: every row reads the same four elements.
    show("bias.broadcast_to", &bias.broadcast_to(&[3, 4])?, &bias)?;
    // The add broadcasts the same way, without materialising the big bias.
    show("x + bias", &x.add(&bias)?, &x)?;
    // A column [3, 1] against a row [4] gives [3, 4].
    let col = Tensor::from_vec(vec![0.0f32, 10.0, 20.0], &[3, 1])?;
    let row = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4])?;
    show("col + row", &col.add(&row)?, &col)?;

    println!("\n== reshape: a view when the strides allow it, else a copy");
    // Contiguous: any reshape is a view.
    show("x.reshape([2, 6])", &x.reshape(&[2, 6])?, &x)?;
    // Narrowed rows: the two leading dims are still contiguous with each
    // other, so splitting them is a view (strides [12, 6, 1]).
    let rows = Tensor::arange(0.0, 24.0, 1.0, DType::F32)?.reshape(&[4, 6])?;
    let left = rows.narrow(1, 0, 3)?; // [4, 3] with strides [6, 1]
    show("left.reshape([2,2,3])", &left.reshape(&[2, 2, 3])?, &left)?;
    // A transposed matrix read row by row is 0 4 8 1 5 9 …: no single
    // stride walks storage in that order, so reshape copies.
    let xt = x.t()?;
    show("x.t().reshape([12])", &xt.reshape(&[12])?, &x)?;
    // `view` refuses instead of copying, and says why.
    println!(
        "x.t().view([12])       error: {}",
        xt.view(&[12]).unwrap_err()
    );
    // The decision itself is `Layout::reshape_view`: Some(layout) or None.
    let t_layout: &Layout = xt.layout();
    println!(
        "reshape_view([12]) of x.t() = {:?}",
        t_layout.reshape_view(&[12])?
    );
    println!(
        "reshape_view([4, 3, 1]) of x.t() = {:?}",
        t_layout.reshape_view(&[4, 3, 1])?
    );

    println!("\n== copy-on-write: writing through a shared tensor copies first");
    let mut y = x.clone(); // O(1): same storage
    assert!(y.shares_storage(&x));
    y.data_mut::<f32>()?[0] = -1.0; // storage is shared, so y gets its own copy
    show("y after the write", &y, &x)?;
    show("x is unchanged", &x, &x)?;
    Ok(())
}
