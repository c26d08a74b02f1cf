//! Deep undercomplete autoencoder: dense layers d -> h1 -> ... -> bottleneck -> ... -> d.

use tch::Tensor;
use tch::nn::{self, Module};

use crate::config::Activation;

#[derive(Debug)]
pub struct DenseAutoencoder {
    encoder: nn::Sequential,
    decoder: nn::Sequential,
}

fn activate(a: Activation, x: &Tensor) -> Tensor {
    match a {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Elu => x.elu(),
    }
}

impl DenseAutoencoder {
    /// Encoder layers `dim -> hidden[0] -> ... -> hidden[last]`, decoder mirrored back to
    /// `dim`. Every layer but the decoder's output is followed by the activation.
    pub fn new(p: &nn::Path, dim: i64, hidden: &[i64], activation: Activation) -> Self {
        let mut encoder = nn::seq();
        let mut prev = dim;
        for (i, &h) in hidden.iter().enumerate() {
            encoder = encoder
                .add(nn::linear(p / "encoder" / i, prev, h, Default::default()))
                .add_fn(move |x| activate(activation, x));
            prev = h;
        }
        let mut decoder = nn::seq();
        let sizes: Vec<i64> = hidden.iter().rev().skip(1).copied().chain([dim]).collect();
        for (i, &h) in sizes.iter().enumerate() {
            decoder = decoder.add(nn::linear(p / "decoder" / i, prev, h, Default::default()));
            if i + 1 < sizes.len() {
                decoder = decoder.add_fn(move |x| activate(activation, x));
            }
            prev = h;
        }
        DenseAutoencoder { encoder, decoder }
    }

    pub fn encode(&self, x: &Tensor) -> Tensor {
        self.encoder.forward(x)
    }

    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.decoder.forward(z)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.decode(&self.encode(x))
    }
}
