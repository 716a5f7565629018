//! `xner bench`: times the phases of a training step (forward, backward, clipping + AdamW) and
//! inference on synthetic batches of a fixed shape, for a model directory.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::Result;
use crate::model::{Batch, DropoutRng, TokenClassifier};
use crate::optim::{AdamW, AdamWConfig};
use crate::shuffle::Pcg64;
use crate::train::train_step;

#[derive(Clone, Debug, Serialize)]
pub struct StepTimes {
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
    pub inference: f64,
    pub tokens: usize,
}

/// A batch of random ids (no padding) of shape (batch, seq).
pub fn synthetic_batch(model: &TokenClassifier, batch: usize, seq: usize, seed: u64) -> Result<Batch> {
    let mut rng = Pcg64::from_seed(seed as u128);
    let vocab = model.config.vocab_size as u64;
    let n_labels = model.num_labels() as u64;
    let ids: Vec<Vec<u32>> =
        (0..batch).map(|_| (0..seq).map(|_| 5 + (rng.next_u64() % (vocab - 5)) as u32).collect()).collect();
    let labels: Vec<i64> = (0..batch * seq).map(|_| (rng.next_u64() % n_labels) as i64).collect();
    let dev = Device::Cpu;
    let positions = model.position_ids(&ids, seq);
    Ok(Batch {
        input_ids: Tensor::from_vec(ids.concat(), (batch, seq), &dev)?,
        attention_mask: Tensor::ones((batch, seq), candle_core::DType::U32, &dev)?,
        labels: Tensor::from_vec(labels, (batch, seq), &dev)?,
        position_ids: Tensor::from_vec(positions, (batch, seq), &dev)?,
    })
}

/// Median phase times over `steps` training steps (after one warm-up step).
pub fn time_steps(model: &TokenClassifier, batch: usize, seq: usize, steps: usize) -> Result<StepTimes> {
    let mut opt = AdamW::new(&model.params, AdamWConfig::default());
    let mut samples: Vec<StepTimes> = vec![];
    for step in 0..=steps {
        let b = synthetic_batch(model, batch, seq, step as u64)?;
        let mut rng = DropoutRng::new(step as u64);
        let phases =
            train_step(model, &mut opt, &b, &mut rng, 1e-5, 1.0)?.expect("every synthetic position is labelled");
        let t4 = Instant::now();
        let _ = model.forward(&b, None)?.sum_all()?.to_scalar::<f32>()?;
        let inference = t4.elapsed().as_secs_f64();
        if step > 0 {
            samples.push(StepTimes {
                forward: phases.forward,
                backward: phases.backward,
                optimizer: phases.optimizer,
                inference,
                tokens: batch * seq,
            });
        }
    }
    let median = |f: fn(&StepTimes) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok(StepTimes {
        forward: median(|s| s.forward),
        backward: median(|s| s.backward),
        optimizer: median(|s| s.optimizer),
        inference: median(|s| s.inference),
        tokens: batch * seq,
    })
}
