//! The autoencoder family as one enum: how each variant is built, trained (its loss) and
//! scored (its per-feature score terms). Definitions follow the original papers:
//! - dense: undercomplete deep autoencoder (Hinton & Salakhutdinov 2006);
//! - sparse_topk: k-sparse autoencoder (Makhzani & Frey 2013): keep the k largest-magnitude
//!   code units, zero the rest, in training and scoring; gradients reach only kept units;
//! - sparse_l1: L1 penalty on code activations; sparse_kl: sum_j KL(rho || rho_hat_j) over
//!   the batch-mean activation rho_hat_j of sigmoid code units (Ng 2011);
//! - denoising: corrupt inputs in training only, reconstruct the clean input (Vincent 2008);
//! - contractive: + lambda ||J_f(x)||_F^2, the encoder Jacobian (Rifai 2011), in closed form
//!   for one sigmoid layer and by autograd otherwise;
//! - vae: Gaussian encoder and decoder, ELBO training (Kingma & Welling 2014); the score is
//!   the reconstruction probability of An & Cho (2015) as a negative log-likelihood of x
//!   under the decoder's Gaussian, averaged over L latent samples; with `score = "elbo"`
//!   plus beta * KL(q(z|x) || N(0, I)), i.e. the record's negative ELBO (the training
//!   loss), which also flags records whose code is unlikely under the prior;
//! - concrete: a selector of k concrete (Gumbel-softmax) nodes over the inputs with an
//!   annealed temperature, then a decoder (Abid, Balin & Zou 2019); at scoring each node is
//!   the one-hot argmax, i.e. k selected features;
//! - pca: the top-p principal components of the standardised data (via SVD);
//! - torchscript: a user's module, standardised x -> reconstruction.

use std::cell::Cell;
use std::path::Path;

use tch::nn::{self, Module};
use tch::{CModule, Device, Kind, Reduction, Tensor};

use super::ModelError;
use crate::config::{Activation, ModelKind, ModelSpec, Noise, VaeScore};

fn activate(a: Activation, x: &Tensor) -> Tensor {
    match a {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Elu => x.elu(),
    }
}

/// Dense layers `sizes[0] -> sizes[1] -> ...`; the activation follows every layer, or every
/// layer but the last.
#[derive(Debug)]
struct Mlp {
    layers: Vec<nn::Linear>,
    activation: Activation,
    activate_last: bool,
}

impl Mlp {
    fn new(p: nn::Path, sizes: &[i64], activation: Activation, activate_last: bool) -> Self {
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(&p / i, w[0], w[1], Default::default()))
            .collect();
        Mlp {
            layers,
            activation,
            activate_last,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let n = self.layers.len();
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i + 1 < n || self.activate_last {
                h = activate(self.activation, &h);
            }
        }
        h
    }
}

/// The dense family (dense, sparse_*, denoising, contractive).
#[derive(Debug)]
pub struct Autoencoder {
    body: Mlp,
    code: nn::Linear,
    decoder: Mlp,
    code_activation: Activation,
    topk: Option<i64>,
}

impl Autoencoder {
    fn new(p: &nn::Path, dim: i64, spec: &ModelSpec) -> Self {
        let h = &spec.hidden;
        let body_sizes: Vec<i64> = std::iter::once(dim)
            .chain(h[..h.len() - 1].iter().copied())
            .collect();
        let body_out = *body_sizes.last().unwrap_or(&dim);
        let dec_sizes: Vec<i64> = h.iter().rev().copied().chain([dim]).collect();
        Autoencoder {
            body: Mlp::new(p / "encoder", &body_sizes, spec.activation, true),
            code: nn::linear(p / "code", body_out, spec.bottleneck(), Default::default()),
            decoder: Mlp::new(p / "decoder", &dec_sizes, spec.activation, false),
            code_activation: if spec.kind == ModelKind::SparseKl {
                Activation::Sigmoid
            } else {
                spec.activation
            },
            topk: (spec.kind == ModelKind::SparseTopk).then_some(spec.sparse.k as i64),
        }
    }

    pub fn encode(&self, x: &Tensor) -> Tensor {
        let z = activate(
            self.code_activation,
            &self.code.forward(&self.body.forward(x)),
        );
        match self.topk {
            Some(k) if k < z.size()[1] => {
                // Keep the k largest |z| per row; the mask is constant, so gradients flow
                // only through the kept units.
                let (_, idx) = z.abs().topk(k, 1, true, false);
                let mask = z.zeros_like().scatter_value(1, &idx, 1.0);
                z * mask
            }
            _ => z,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.decoder.forward(&self.encode(x))
    }

    /// ||d code / d x||_F^2 summed over the batch.
    fn contractive_penalty(&self, x: &Tensor, spec: &ModelSpec) -> Tensor {
        if self.body.layers.is_empty() && self.code_activation == Activation::Sigmoid {
            // One sigmoid layer h = s(Wx + b): ||J||^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2.
            let h = self.encode(x);
            let w2 = self.code.ws.square().sum_dim_intlist(1, false, Kind::Float);
            return ((&h * (-&h + 1.0)).square() * w2).sum(Kind::Float);
        }
        let x = x.detach().set_requires_grad(true);
        let z = self.encode(&x);
        let mut total = Tensor::zeros([], (Kind::Float, x.device()));
        for j in 0..spec.bottleneck() {
            let g = Tensor::run_backward(&[z.select(1, j).sum(Kind::Float)], &[&x], true, true);
            total += g[0].square().sum(Kind::Float);
        }
        total
    }
}

/// Gaussian encoder q(z|x) and Gaussian decoder p(x|z).
#[derive(Debug)]
pub struct Vae {
    body: Mlp,
    mu: nn::Linear,
    logvar: nn::Linear,
    decoder: Mlp,
    out_mu: nn::Linear,
    out_logvar: nn::Linear,
    /// Fixed standard-normal draws [L, latent] for scoring: the reconstruction probability
    /// is then a deterministic function of x (saved with the weights).
    eps: Tensor,
    /// beta when the score is the negative ELBO, else None.
    kl_weight: Option<f64>,
    /// The decoder's log-variance floor, 2 ln(`model.vae.min_std`).
    min_out_logvar: f64,
}

const LOGVAR_RANGE: (f64, f64) = (-8.0, 8.0);
const LN_2PI: f64 = 1.837_877_066_409_345_5;

impl Vae {
    fn new(p: &nn::Path, dim: i64, spec: &ModelSpec) -> Self {
        let h = &spec.hidden;
        let latent = spec.bottleneck();
        let body_sizes: Vec<i64> = std::iter::once(dim)
            .chain(h[..h.len() - 1].iter().copied())
            .collect();
        let body_out = *body_sizes.last().unwrap_or(&dim);
        let dec_sizes: Vec<i64> = std::iter::once(latent)
            .chain(h[..h.len() - 1].iter().rev().copied())
            .collect();
        let dec_out = *dec_sizes.last().unwrap_or(&latent);
        let eps = p.zeros_no_train("eps", &[spec.vae.samples as i64, latent]);
        tch::no_grad(|| {
            let _ = eps.shallow_clone().normal_(0.0, 1.0);
        });
        Vae {
            body: Mlp::new(p / "encoder", &body_sizes, spec.activation, true),
            mu: nn::linear(p / "mu", body_out, latent, Default::default()),
            logvar: nn::linear(p / "logvar", body_out, latent, Default::default()),
            decoder: Mlp::new(p / "decoder", &dec_sizes, spec.activation, true),
            out_mu: nn::linear(p / "out_mu", dec_out, dim, Default::default()),
            out_logvar: nn::linear(p / "out_logvar", dec_out, dim, Default::default()),
            eps,
            kl_weight: (spec.vae.score == VaeScore::Elbo).then_some(spec.vae.beta),
            min_out_logvar: (2.0 * spec.vae.min_std.ln()).clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1),
        }
    }

    /// The posterior q(z|x): its mean and log-variance, `[n, latent]` each.
    pub(crate) fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.body.forward(x);
        let lv = self
            .logvar
            .forward(&h)
            .clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1);
        (self.mu.forward(&h), lv)
    }

    fn decode(&self, z: &Tensor) -> (Tensor, Tensor) {
        let h = self.decoder.forward(z);
        // A feature (nearly) constant in training would otherwise get a vanishing
        // variance, and any later deviation in it an unbounded score that drowns the rest.
        let lv = self
            .out_logvar
            .forward(&h)
            .clamp(self.min_out_logvar, LOGVAR_RANGE.1);
        (self.out_mu.forward(&h), lv)
    }

    /// Per-feature -log N(x; mu, exp(logvar)) and its squared standardised residual part.
    fn nll(x: &Tensor, mu: &Tensor, logvar: &Tensor) -> (Tensor, Tensor) {
        let resid = (x - mu).square() / logvar.exp();
        let nll = (logvar + LN_2PI + &resid) * 0.5;
        (nll, resid * 0.5)
    }

    fn loss(&self, x: &Tensor, beta: f64) -> Tensor {
        let (mu, logvar) = self.encode(x);
        let z = &mu + (&logvar * 0.5).exp() * mu.randn_like();
        let (xm, xlv) = self.decode(&z);
        let (nll, _) = Self::nll(x, &xm, &xlv);
        let d = x.size()[1] as f64;
        (nll.sum_dim_intlist(1, false, Kind::Float) + Self::kl(&mu, &logvar) * beta)
            .mean(Kind::Float)
            / d
    }

    /// KL(N(mu, exp(logvar)) || N(0, I)) per record, `[n]`.
    fn kl(mu: &Tensor, logvar: &Tensor) -> Tensor {
        (logvar + 1.0 - mu.square() - logvar.exp()).sum_dim_intlist(1, false, Kind::Float) * -0.5
    }

    /// The reconstruction probability as per-feature NLL averaged over the L fixed samples;
    /// for the ELBO score each feature's term also carries beta * KL / d, so the row mean
    /// is the record's negative ELBO / d. The explanation stays the per-feature residuals.
    fn terms(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (mu, logvar) = self.encode(x);
        let std = (&logvar * 0.5).exp();
        // [L, n, latent]
        let z = mu.unsqueeze(0) + self.eps.unsqueeze(1) * std.unsqueeze(0);
        let (xm, xlv) = self.decode(&z);
        let (nll, resid) = Self::nll(&x.unsqueeze(0), &xm, &xlv);
        let mut terms = nll.mean_dim(0, false, Kind::Float);
        if let Some(beta) = self.kl_weight {
            let d = x.size()[1] as f64;
            terms += (Self::kl(&mu, &logvar) * (beta / d)).unsqueeze(1);
        }
        (terms, resid.mean_dim(0, false, Kind::Float))
    }
}

/// Concrete selector + decoder.
#[derive(Debug)]
pub struct Concrete {
    logits: Tensor,
    decoder: Mlp,
    temperature: Cell<f64>,
}

impl Concrete {
    fn new(p: &nn::Path, dim: i64, spec: &ModelSpec) -> Self {
        let k = spec.concrete.k as i64;
        let h = &spec.hidden;
        let sizes: Vec<i64> = std::iter::once(k)
            .chain(h[..h.len() - 1].iter().rev().copied())
            .chain([dim])
            .collect();
        Concrete {
            logits: p.var(
                "selector_logits",
                &[k, dim],
                nn::Init::Uniform {
                    lo: -0.01,
                    up: 0.01,
                },
            ),
            decoder: Mlp::new(p / "decoder", &sizes, spec.activation, false),
            temperature: Cell::new(spec.concrete.start_temperature),
        }
    }

    fn select(&self, x: &Tensor, train: bool) -> Tensor {
        let w = if train {
            let u = self.logits.rand_like().clamp(1e-10, 1.0 - 1e-10);
            let gumbel = -(-u.log()).log();
            ((&self.logits + gumbel) / self.temperature.get()).softmax(1, Kind::Float)
        } else {
            self.selected_onehot()
        };
        x.matmul(&w.tr())
    }

    fn selected_onehot(&self) -> Tensor {
        let d = self.logits.size()[1];
        self.logits.argmax(1, false).one_hot(d).to_kind(Kind::Float)
    }

    /// Indices of the selected input features, one per selector node.
    pub fn selected(&self) -> Result<Vec<i64>, ModelError> {
        let idx = self.logits.argmax(1, false).to_device(Device::Cpu);
        Ok(Vec::<i64>::try_from(&idx)?)
    }
}

/// The family: one variant per model kind.
pub enum Network {
    Ae(Autoencoder),
    Vae(Vae),
    Concrete(Concrete),
    Pca { components: Tensor },
    Script(CModule),
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Ae(_) => "Network::Ae",
            Network::Vae(_) => "Network::Vae",
            Network::Concrete(_) => "Network::Concrete",
            Network::Pca { .. } => "Network::Pca",
            Network::Script(_) => "Network::Script",
        })
    }
}

impl Network {
    /// Builds the variant's parameters under `p` (random until trained or loaded). A
    /// TorchScript module is loaded from `script`.
    pub fn build(
        p: &nn::Path,
        dim: i64,
        spec: &ModelSpec,
        script: Option<&Path>,
    ) -> Result<Self, ModelError> {
        Ok(match spec.kind {
            ModelKind::Dense
            | ModelKind::SparseTopk
            | ModelKind::SparseL1
            | ModelKind::SparseKl
            | ModelKind::Denoising
            | ModelKind::Contractive => Network::Ae(Autoencoder::new(&(p / "ae"), dim, spec)),
            ModelKind::Vae => Network::Vae(Vae::new(&(p / "vae"), dim, spec)),
            ModelKind::Concrete => Network::Concrete(Concrete::new(&(p / "concrete"), dim, spec)),
            ModelKind::Pca => Network::Pca {
                components: (p / "pca")
                    .zeros_no_train("components", &[spec.pca.components as i64, dim]),
            },
            ModelKind::Torchscript => {
                let path = script
                    .ok_or_else(|| ModelError::Mismatch("no TorchScript module path".into()))?;
                let mut m = CModule::load_on_device(path, p.device())?;
                m.set_eval();
                Network::Script(m)
            }
        })
    }

    /// Whether the variant is trained by gradient descent.
    pub fn trainable(&self) -> bool {
        matches!(
            self,
            Network::Ae(_) | Network::Vae(_) | Network::Concrete(_)
        )
    }

    /// Sets the annealed temperature for epoch `epoch` of `epochs` (concrete only).
    pub fn anneal(&self, spec: &ModelSpec, epoch: usize, epochs: usize) {
        if let Network::Concrete(c) = self {
            let (t0, t1) = (
                spec.concrete.start_temperature,
                spec.concrete.end_temperature,
            );
            let frac = epoch as f64 / (epochs.max(2) - 1) as f64;
            c.temperature.set(t0 * (t1 / t0).powf(frac));
        }
    }

    /// The training loss for a clean minibatch `x`.
    pub fn loss(&self, x: &Tensor, spec: &ModelSpec, bounds: &(Tensor, Tensor)) -> Tensor {
        match self {
            Network::Ae(ae) => {
                let input = if spec.kind == ModelKind::Denoising {
                    corrupt(x, spec, bounds)
                } else {
                    x.shallow_clone()
                };
                let code = ae.encode(&input);
                let recon = ae.decoder.forward(&code);
                let mse = recon.mse_loss(x, Reduction::Mean);
                let n = x.size()[0] as f64;
                match spec.kind {
                    ModelKind::SparseL1 => mse + code.abs().mean(Kind::Float) * spec.sparse.lambda,
                    ModelKind::SparseKl => {
                        let rho = spec.sparse.rho;
                        let rho_hat = code.mean_dim(0, false, Kind::Float).clamp(1e-6, 1.0 - 1e-6);
                        let kl = (rho_hat.reciprocal() * rho).log() * rho
                            + ((-&rho_hat + 1.0).reciprocal() * (1.0 - rho)).log() * (1.0 - rho);
                        mse + kl.sum(Kind::Float) * spec.sparse.lambda
                    }
                    ModelKind::Contractive => {
                        mse + ae.contractive_penalty(x, spec) * (spec.contractive.lambda / n)
                    }
                    _ => mse,
                }
            }
            Network::Vae(v) => v.loss(x, spec.vae.beta),
            Network::Concrete(c) => c
                .decoder
                .forward(&c.select(x, true))
                .mse_loss(x, Reduction::Mean),
            // Not trained by gradient descent.
            Network::Pca { .. } | Network::Script(_) => {
                Tensor::zeros([], (Kind::Float, x.device()))
            }
        }
    }

    /// Per-feature score terms `[n, d]` whose row mean is the score, and the non-negative
    /// per-feature terms that explain it.
    pub fn terms(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let recon = match self {
            Network::Ae(ae) => ae.forward(x),
            Network::Vae(v) => return Ok(v.terms(x)),
            Network::Concrete(c) => c.decoder.forward(&c.select(x, false)),
            Network::Pca { components } => x.matmul(&components.tr()).matmul(components),
            Network::Script(m) => m.forward_ts(&[x])?.to_kind(Kind::Float),
        };
        let err = (recon - x).square();
        Ok((err.shallow_clone(), err))
    }

    /// PCA: sets the components to the top right-singular vectors of the data.
    pub fn fit_pca(&mut self, x: &Tensor) {
        if let Network::Pca { components } = self {
            let p = components.size()[0];
            // x = U S V^T: the rows of V^T are the principal directions.
            let (_, _, v) = x.svd(true, true);
            tch::no_grad(|| components.copy_(&v.narrow(1, 0, p).tr()));
        }
    }

    pub fn as_concrete(&self) -> Option<&Concrete> {
        match self {
            Network::Concrete(c) => Some(c),
            _ => None,
        }
    }
}

/// Denoising corruption of standardised inputs (training only). `bounds` are the
/// per-feature (min, max) of the training data, used by salt-and-pepper noise.
fn corrupt(x: &Tensor, spec: &ModelSpec, bounds: &(Tensor, Tensor)) -> Tensor {
    let p = &spec.denoising;
    match p.noise {
        Noise::Gaussian => x + x.randn_like() * p.sigma,
        Noise::Masking => x * x.rand_like().ge(p.fraction).to_kind(Kind::Float),
        Noise::SaltPepper => {
            let hit = x.rand_like().lt(p.fraction);
            let salt = x.rand_like().lt(0.5);
            let extreme = bounds
                .1
                .expand_as(x)
                .where_self(&salt, &bounds.0.expand_as(x));
            extreme.where_self(&hit, x)
        }
    }
}
