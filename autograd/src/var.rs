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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use kiln_tensor::{DType, Tensor};

use crate::{AutogradError, Result};

/// A function run after a backward pass adds its gradient to a leaf.
type GradHook = Arc<dyn Fn() + Send + Sync>;

/// Shared state of a leaf: its current value and accumulated gradient.
pub struct Leaf {
    value: RwLock<Tensor>,
    grad: Mutex<Option<Tensor>>,
    requires_grad: AtomicBool,
    hooks: Mutex<Vec<(u64, GradHook)>>,
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
        f(&mut slot)
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
