//! Shaping decoded values into the model's vector: as they are, or, in window mode, through
//! the key's sliding window ([`Windower`], per-key state bounded by an LRU).

use crate::config::{InputShape, InputSpec};
use crate::model::window::Windower;

/// Turns decoded values into the model's vector: as is, or through the key's window.
pub enum Shaper {
    Direct,
    Window(Windower),
}

impl Shaper {
    pub fn new(spec: &InputSpec) -> Self {
        match &spec.shape {
            InputShape::Window {
                size,
                differences,
                max_keys,
                ..
            } => Shaper::Window(Windower::new(*size, *differences, *max_keys)),
            _ => Shaper::Direct,
        }
    }

    pub fn shape(&mut self, key: Option<&str>, values: Vec<f32>) -> Vec<f32> {
        match self {
            Shaper::Direct => values,
            Shaper::Window(w) => w.push(key, values[0]),
        }
    }
}
