//! `Var`: a tensor that takes part in automatic differentiation.
//!
//! A `Var` is one of three things:
//! - a **leaf** (a parameter): its value and accumulated gradient live in a
//!   shared [`Leaf`], so every clone of the `Var` — the model's, the
//!   optimizer's — sees the same value and gradient, like a PyTorch
//!   `nn.Parameter`;
//! - a **node**: the output of an op recorded on the current tape;
//! - a **constant**: data that needs no gradient (inputs, detached values,
//!   anything computed under [`no_grad`](crate::no_grad)).

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use kiln_tensor::{DType, Tensor};

use crate::{AutogradError, Result};

/// A function run after a backward pass adds its gradient to a leaf.
type GradHook = Arc<dyn Fn() + Send + Sync>;

/// A value computed from a leaf's value and kept with it ([`Var::derived`]).
type Derived = Arc<dyn Any + Send + Sync>;

/// Shared state of a leaf: its current value and accumulated gradient.
pub struct Leaf {
    value: RwLock<Tensor>,
    grad: Mutex<Option<Tensor>>,
    requires_grad: AtomicBool,
    hooks: Mutex<Vec<(u64, GradHook)>>,
    /// What [`Var::derived`] computed from the current value; emptied
    /// whenever the value changes.
    derived: Mutex<Option<Derived>>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("value", &self.value)
            .field("grad", &self.grad)
            .field("requires_grad", &self.requires_grad)
            .finish_non_exhaustive()
    }
}

impl Leaf {
    /// Adds one backward pass's gradient, then runs the leaf's hooks
    /// ([`Var::register_post_accumulate_grad_hook`]).
    pub(crate) fn accumulate(&self, g: Tensor) -> Result<()> {
        {
            let mut slot = self.grad.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *slot {
                None => *slot = Some(g.contiguous()),
                Some(prev) => prev.add_assign(&g)?,
            }
        }
        // Cloned out of the lock: a hook may register or drop hooks.
        let hooks: Vec<GradHook> = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in hooks {
            h();
        }
        Ok(())
    }

    pub(crate) fn requires_grad(&self) -> bool {
        self.requires_grad.load(Ordering::Relaxed)
    }

    /// Drops what [`Var::derived`] kept: the value it came from changed.
    fn forget_derived(&self) {
        *self.derived.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Const(Tensor),
    Leaf(Arc<Leaf>),
    Node {
        value: Tensor,
        generation: u64,
        id: usize,
    },
}

/// A differentiable value; see the module docs.
#[derive(Debug, Clone)]
pub struct Var {
    pub(crate) kind: Kind,
}

impl Var {
    /// A leaf that requires grad (a trainable parameter).
    pub fn parameter(value: Tensor) -> Var {
        Var {
            kind: Kind::Leaf(Arc::new(Leaf {
                value: RwLock::new(value),
                grad: Mutex::new(None),
                requires_grad: AtomicBool::new(true),
                hooks: Mutex::new(Vec::new()),
                derived: Mutex::new(None),
            })),
        }
    }

    /// A constant: a value no gradient flows into.
    pub fn constant(value: Tensor) -> Var {
        Var {
            kind: Kind::Const(value),
        }
    }

    /// The current value. O(1): tensors share storage.
    pub fn value(&self) -> Tensor {
        match &self.kind {
            Kind::Const(t) | Kind::Node { value: t, .. } => t.clone(),
            Kind::Leaf(l) => l.value.read().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.value().shape().to_vec()
    }

    /// Dtype of the value.
    pub fn dtype(&self) -> DType {
        self.value().dtype()
    }

    /// Whether gradients flow into this value: a leaf with `requires_grad`,
    /// or a recorded node.
    pub fn requires_grad(&self) -> bool {
        match &self.kind {
            Kind::Const(_) => false,
            Kind::Leaf(l) => l.requires_grad(),
            Kind::Node { .. } => true,
        }
    }

    /// Whether this is a leaf (parameter).
    pub fn is_leaf(&self) -> bool {
        matches!(self.kind, Kind::Leaf(_))
    }

    /// Turns gradient tracking on or off for a leaf (freezing a parameter).
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if this is not a leaf.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        match &self.kind {
            Kind::Leaf(l) => {
                l.requires_grad.store(on, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(AutogradError::Invalid {
                op: "set_requires_grad",
                msg: "only leaves (parameters) can change requires_grad".into(),
            }),
        }
    }

    /// The accumulated gradient of a leaf (`param.grad`), or `None` if no
    /// backward pass has reached it since the last [`Var::zero_grad`].
    /// Non-leaves do not keep gradients and always return `None`.
    pub fn grad(&self) -> Option<Tensor> {
        match &self.kind {
            Kind::Leaf(l) => l.grad.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            _ => None,
        }
    }

    /// Runs `hook` after every backward pass that adds to this leaf's
    /// gradient, once the pass's whole contribution is in `.grad`
    /// (PyTorch's `param.register_post_accumulate_grad_hook`): a
    /// data-parallel reducer sends a gradient as soon as it is complete,
    /// while backward goes on with the layers below. The hook runs on the
    /// thread running backward; dropping the handle removes it.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if this is not a leaf.
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: impl Fn() + Send + Sync + 'static,
    ) -> Result<GradHookHandle> {
        let Kind::Leaf(l) = &self.kind else {
            return Err(AutogradError::Invalid {
                op: "register_post_accumulate_grad_hook",
                msg: "only leaves (parameters) accumulate gradients".into(),
            });
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        l.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(hook)));
        Ok(GradHookHandle {
            leaf: Arc::downgrade(l),
            id,
        })
    }

    /// Clears a leaf's gradient (`param.grad = None`).
    pub fn zero_grad(&self) {
        if let Kind::Leaf(l) = &self.kind {
            *l.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Replaces a leaf's gradient (used by gradient clipping).
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if this is not a leaf,
    /// [`AutogradError::GradShape`] if the shape differs from the value's.
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        let Kind::Leaf(l) = &self.kind else {
            return Err(AutogradError::Invalid {
                op: "set_grad",
                msg: "only leaves (parameters) hold gradients".into(),
            });
        };
        if let Some(g) = &grad {
            let v = self.value();
            if g.shape() != v.shape() {
                return Err(AutogradError::GradShape {
                    op: "set_grad",
                    expected: v.shape().to_vec(),
                    got: g.shape().to_vec(),
                });
            }
        }
        *l.grad.lock().unwrap_or_else(|e| e.into_inner()) = grad;
        Ok(())
    }

    /// Replaces a leaf's value (an optimizer step, loading weights). The
    /// shape and dtype may not change.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if this is not a leaf,
    /// [`AutogradError::GradShape`] on a shape change.
    pub fn set_value(&self, value: Tensor) -> Result<()> {
        let Kind::Leaf(l) = &self.kind else {
            return Err(AutogradError::Invalid {
                op: "set_value",
                msg: "only leaves (parameters) can be assigned".into(),
            });
        };
        let mut slot = l.value.write().unwrap_or_else(|e| e.into_inner());
        if slot.shape() != value.shape() || slot.dtype() != value.dtype() {
            return Err(AutogradError::Invalid {
                op: "set_value",
                msg: format!(
                    "new value {:?} {} does not match the parameter's {:?} {}",
                    value.shape(),
                    value.dtype(),
                    slot.shape(),
                    slot.dtype()
                ),
            });
        }
        *slot = value;
        drop(slot);
        l.forget_derived();
        Ok(())
    }

    /// Runs `f` on a leaf's value in place (copy-on-write if a tape still
    /// holds the old storage). Optimizers use this for fused updates.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if this is not a leaf, or whatever `f` returns.
    pub fn update_value<R>(&self, f: impl FnOnce(&mut Tensor) -> Result<R>) -> Result<R> {
        let Kind::Leaf(l) = &self.kind else {
            return Err(AutogradError::Invalid {
                op: "update_value",
                msg: "only leaves (parameters) can be updated".into(),
            });
        };
        let mut slot = l.value.write().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut slot);
        drop(slot);
        l.forget_derived();
        r
    }

    /// `f(value)`, computed once and kept with this leaf until its value
    /// changes ([`Var::set_value`], [`Var::update_value`]): how a layer
    /// keeps its bf16 weight packed for the matrix kernel
    /// ([`kiln_tensor::Tensor::prepack_rhs`]) across forward passes. A leaf
    /// keeps one such value: asking for another type computes it afresh and
    /// replaces the first. Constants and recorded outputs keep nothing; `f`
    /// runs on every call. (PyTorch has no counterpart; weight caches there
    /// live outside the parameter, keyed on its version counter.)
    ///
    /// `f` runs under this leaf's lock for it, so it must not ask the same
    /// leaf for its derived value (it would wait on itself).
    ///
    /// # Errors
    /// Whatever `f` returns (nothing is kept then).
    pub fn derived<T: Any + Send + Sync, E>(
        &self,
        f: impl FnOnce(&Tensor) -> std::result::Result<T, E>,
    ) -> std::result::Result<Arc<T>, E> {
        let Kind::Leaf(l) = &self.kind else {
            return f(&self.value()).map(Arc::new);
        };
        // Held while computing, so two threads do not both compute it. A
        // value change clears the slot after releasing the value, so the
        // two locks are never held in the opposite order.
        let mut slot = l.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref().and_then(|d| d.clone().downcast::<T>().ok()) {
            return Ok(d);
        }
        let d = Arc::new(f(&self.value())?);
        *slot = Some(d.clone());
        Ok(d)
    }

    /// A constant with the same value: gradients stop here (`x.detach()`).
    pub fn detach(&self) -> Var {
        Var::constant(self.value())
    }

    /// Whether two `Var`s are the same leaf (clones of one parameter).
    pub fn same_leaf(&self, other: &Var) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Leaf(a), Kind::Leaf(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl From<Tensor> for Var {
    fn from(t: Tensor) -> Var {
        Var::constant(t)
    }
}

/// Keeps a hook from [`Var::register_post_accumulate_grad_hook`]
/// registered; dropping it removes the hook (PyTorch's `handle.remove()`).
#[derive(Debug)]
pub struct GradHookHandle {
    leaf: Weak<Leaf>,
    id: u64,
}

impl Drop for GradHookHandle {
    fn drop(&mut self) {
        if let Some(l) = self.leaf.upgrade() {
            l.hooks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// `derived` computes once per value: again after `set_value` and
    /// `update_value`, on a type change, and every time for a constant.
    #[test]
    fn derived_values_follow_the_leaf_value() {
        let calls = AtomicUsize::new(0);
        let sum = |t: &Tensor| -> Result<f32> {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(t.to_vec::<f32>()?.iter().sum())
        };
        let p = Var::parameter(Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
        assert_eq!(*p.derived(sum).unwrap(), 3.0);
        assert_eq!(*p.clone().derived(sum).unwrap(), 3.0);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        p.set_value(Tensor::from_vec(vec![5.0f32, 2.0], &[2]).unwrap())
            .unwrap();
        assert_eq!(*p.derived(sum).unwrap(), 7.0);
        p.update_value(|t| {
            t.data_mut::<f32>()?[1] = 0.0;
            Ok(())
        })
        .unwrap();
        assert_eq!(*p.derived(sum).unwrap(), 5.0);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        // Another type replaces the kept value; a failure keeps nothing.
        assert_eq!(
            *p.derived(|t| Ok::<_, AutogradError>(t.numel())).unwrap(),
            2
        );
        assert!(p
            .derived(|_| Err::<u8, _>(AutogradError::Invalid {
                op: "test",
                msg: String::new()
            }))
            .is_err());
        assert_eq!(*p.derived(sum).unwrap(), 5.0);
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        let c = Var::constant(Tensor::from_vec(vec![1.0f32], &[1]).unwrap());
        c.derived(sum).unwrap();
        c.derived(sum).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 6);
    }
}
