//! xner's model against transformers on tiny random models and real PAN-X batches
//! (fixtures from scripts/hf_parity.py): logits, loss, and the gradient of every parameter —
//! with the fused CPU kernels and with the composed ops other devices run, on the CPU and,
//! built with `--features cuda`, on the GPU (`cuda_*` tests; run on a GPU machine, docs/GPU.md).

mod common;

use candle_core::{Device, Tensor};
use serde_json::Value;
use xner::model::{token_loss, Batch, Kernels, TokenClassifier};

fn tensor_2d<T: candle_core::WithDType>(rows: &Value, f: impl Fn(&Value) -> T) -> Tensor {
    let rows = rows.as_array().unwrap();
    let t = rows[0].as_array().unwrap().len();
    let flat: Vec<T> = rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(&f).collect::<Vec<_>>()).collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

/// A fixture batch on the model's device.
fn batch(model: &TokenClassifier, b: &Value) -> Batch {
    let ids = tensor_2d(&b["input_ids"], |v| v.as_u64().unwrap() as u32);
    let rows: Vec<Vec<u32>> = ids.to_vec2().unwrap();
    let t = rows[0].len();
    let positions = Tensor::from_vec(model.position_ids(&rows, t), (rows.len(), t), &Device::Cpu).unwrap();
    let on = |t: Tensor| t.to_device(model.device()).unwrap();
    Batch {
        input_ids: on(ids),
        attention_mask: on(tensor_2d(&b["attention_mask"], |v| v.as_u64().unwrap() as u32)),
        labels: on(tensor_2d(&b["labels"], |v| v.as_i64().unwrap())),
        position_ids: on(positions),
    }
}

/// Largest absolute difference, read on the CPU (either side may live on a GPU).
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    host(a).sub(&host(b)).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// (batch, seq, 1) on the CPU: 1 on real tokens. Logits are compared there only: xner computes
/// no padded slot (their logits are zeros, never read).
fn real_positions(batch: &xner::model::Batch) -> Tensor {
    host(&batch.attention_mask).to_dtype(candle_core::DType::F32).unwrap().unsqueeze(2).unwrap()
}

/// `t` on the CPU.
fn host(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap()
}

/// A fixture's model (from its subdirectory `model_dir`) and its inputs.json.
fn load_fixture(dir: &std::path::Path, model_dir: &str) -> (TokenClassifier, Value) {
    load_fixture_on(dir, model_dir, &Device::Cpu)
}

fn load_fixture_on(dir: &std::path::Path, model_dir: &str, device: &Device) -> (TokenClassifier, Value) {
    let model = TokenClassifier::load(&dir.join(model_dir), None, 0, device).unwrap();
    let inputs = serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    (model, inputs)
}

/// Logits, loss and every parameter's gradient against transformers', on `device` with the
/// model's ops from `kernels` (the fused CPU kernels, or the composed ops other devices run).
fn check_family(kind: &str, kernels: Kernels, device: &Device) {
    let dir = common::fixtures().join("parity").join(kind);
    let (mut model, inputs) = load_fixture_on(&dir, "model", device);
    model.set_kernels(kernels).unwrap();
    let kind = &format!("{kind} ({kernels:?} on {device:?})");
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    for (i, b) in inputs["batches"].as_array().unwrap().iter().enumerate() {
        let batch = batch(&model, b);
        let logits = model.forward(&batch, None).unwrap();
        let real = real_positions(&batch);
        let diff = max_abs_diff(
            &host(&logits).broadcast_mul(&real).unwrap(),
            &expected[&format!("logits.{i}")].broadcast_mul(&real).unwrap(),
        );
        assert!(diff <= 1e-4, "{kind} batch {i}: logits differ by {diff}");
        let loss = token_loss(&logits, &batch.labels).unwrap().unwrap();
        let want = inputs["loss"][i].as_f64().unwrap() as f32;
        let got = loss.to_scalar::<f32>().unwrap();
        assert!((got - want).abs() <= 1e-5, "{kind} batch {i}: loss {got}, transformers {want}");
        if i == 0 {
            // The training path: word-embedding rows as a leaf, their gradient scattered back.
            let (logits, words) = model.forward_train(&batch, None).unwrap();
            let loss = token_loss(&logits, &batch.labels).unwrap().unwrap();
            let grads = loss.backward().unwrap();
            let rows = words.sparse_grad(&grads).unwrap().expect("word rows get a gradient");
            let word_index = model.word_embedding_index();
            let (_, table) = &model.params[word_index];
            let mut dense = vec![0f32; table.elem_count()];
            for (k, &r) in rows.rows.iter().enumerate() {
                let w = rows.width;
                dense[r as usize * w..(r as usize + 1) * w].copy_from_slice(&rows.grad[k * w..(k + 1) * w]);
            }
            let dense = Tensor::from_vec(dense, table.dims(), &Device::Cpu).unwrap();
            let expected_names = expected.keys().filter(|k| k.starts_with("grad.")).count();
            assert_eq!(model.params.len(), expected_names, "{kind}: parameter count");
            for (p, (name, var)) in model.params.iter().enumerate() {
                let got = if p == word_index {
                    &dense
                } else {
                    grads.get(var).unwrap_or_else(|| panic!("{kind}: no gradient reaches {name}"))
                };
                let want = &expected[&format!("grad.{name}")];
                let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                let got = host(got);
                let diff = max_abs_diff(&got, want);
                assert!(diff <= 1e-4 * scale.max(1e-2), "{kind}: gradient of {name} differs by {diff} (scale {scale})");
                // Any parameter that matters gets a non-zero gradient.
                assert!(scale == 0.0 || max_abs_diff(&got, &got.zeros_like().unwrap()) > 0.0, "{name}");
            }
        }
    }
}

#[test]
fn xlm_roberta_matches_transformers() {
    check_family("xlm-roberta", Kernels::Fused, &Device::Cpu);
}

#[test]
fn bert_matches_transformers() {
    check_family("bert", Kernels::Fused, &Device::Cpu);
}

#[test]
fn composed_ops_for_other_devices_match_transformers() {
    check_family("xlm-roberta", Kernels::Composed, &Device::Cpu);
    check_family("bert", Kernels::Composed, &Device::Cpu);
}

/// The GPU these checks run on (a build with `--features cuda`, on a machine with one).
#[cfg(feature = "cuda")]
fn gpu() -> Device {
    Device::new_cuda(0).expect("the cuda_* tests need a CUDA GPU (docs/GPU.md)")
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_transformers() {
    check_family("xlm-roberta", Kernels::Composed, &gpu());
    check_family("bert", Kernels::Composed, &gpu());
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_training_steps_match_the_fused_cpu_kernels() {
    training_steps_match_the_fused_cpu_kernels(&gpu());
}

#[test]
fn composed_training_steps_match_the_fused_cpu_kernels() {
    training_steps_match_the_fused_cpu_kernels(&Device::Cpu);
}

/// Three training steps (dropout on, the same masks: they are drawn on the host) with the
/// fused CPU kernels and optimizer, and with the composed ops and optimizer on `device`: every
/// parameter must move alike, up to rounding.
fn training_steps_match_the_fused_cpu_kernels(device: &Device) {
    let dir = common::fixtures().join("parity/xlm-roberta");
    let (fused, inputs) = load_fixture(&dir, "model");
    let (mut composed, _) = load_fixture_on(&dir, "model", device);
    composed.set_kernels(Kernels::Composed).unwrap();
    let initial: Vec<Tensor> = fused.params.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
    let config = xner::optim::AdamWConfig::default();
    let mut fused_opt = xner::optim::AdamW::new(&fused.params, config).unwrap();
    let mut composed_opt = xner::optim::AdamW::composed(&composed.params, config).unwrap();
    for step in 0..3u64 {
        for (model, opt) in [(&fused, &mut fused_opt), (&composed, &mut composed_opt)] {
            let b = batch(model, &inputs["batches"][step as usize % 2]);
            let mut rng = xner::model::DropoutRng::new(100 + step);
            xner::train::train_step(model, opt, &b, &mut rng, 1e-3, 1.0).unwrap().expect("labelled batch");
        }
    }
    fused_opt.flush(&fused.params).unwrap();
    for (((name, f), (_, c)), init) in fused.params.iter().zip(&composed.params).zip(&initial) {
        // The key bias moves by rounding alone, a small fraction of the 3 steps of 1e-3.
        common::assert_trained_alike(name, init, f.as_tensor(), c.as_tensor(), 1e-3);
    }
}

#[test]
fn fused_and_composed_training_passes_agree_with_dropout() {
    // Same seed, same masks: the two implementations must give the same logits and gradients
    // in training mode too (dropout in attention, after each sublayer and in the head).
    let dir = common::fixtures().join("parity/xlm-roberta");
    let (mut model, inputs) = load_fixture(&dir, "model");
    let batch = batch(&model, &inputs["batches"][1]);
    let real = real_positions(&batch);
    let mut run = |kernels| {
        model.set_kernels(kernels).unwrap();
        let mut rng = xner::model::DropoutRng::new(11);
        let (logits, words) = model.forward_train(&batch, Some(&mut rng)).unwrap();
        let grads = token_loss(&logits, &batch.labels).unwrap().unwrap().backward().unwrap();
        let param_grads: Vec<Tensor> = model.params.iter().filter_map(|(_, v)| grads.get(v).cloned()).collect();
        let rows = words.sparse_grad(&grads).unwrap().expect("word rows get a gradient");
        (logits.broadcast_mul(&real).unwrap(), param_grads, rows.grad)
    };
    let (fused_logits, fused_grads, fused_rows) = run(Kernels::Fused);
    let (composed_logits, composed_grads, composed_rows) = run(Kernels::Composed);
    let eval = model.forward(&batch, None).unwrap().broadcast_mul(&real).unwrap();
    assert!(max_abs_diff(&fused_logits, &eval) > 1e-3, "dropout must act");
    let diff = max_abs_diff(&fused_logits, &composed_logits);
    assert!(diff <= 1e-5, "training logits differ by {diff}");
    assert_eq!(fused_grads.len(), model.params.len() - 1, "every parameter but the word table (sparse rows)");
    assert_eq!(fused_grads.len(), composed_grads.len());
    for ((name, _), (f, c)) in
        model.params.iter().filter(|(n, _)| !n.contains("word_emb")).zip(fused_grads.iter().zip(&composed_grads))
    {
        let scale = f.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let diff = max_abs_diff(f, c);
        assert!(diff <= 1e-4 * scale.max(1e-2), "gradient of {name} differs by {diff} (scale {scale})");
    }
    let worst = fused_rows.iter().zip(&composed_rows).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5, "word rows' gradients differ by {worst}");
}

#[test]
fn pytorch_model_bin_loads_to_the_same_logits() {
    let dir = common::fixtures().join("parity/bert");
    assert!(dir.join("model-bin/pytorch_model.bin").exists() && !dir.join("model-bin/model.safetensors").exists());
    let (model, inputs) = load_fixture(&dir, "model-bin");
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let batch = batch(&model, &inputs["batches"][0]);
    let logits = model.forward(&batch, None).unwrap();
    let real = real_positions(&batch);
    let diff = max_abs_diff(&logits.broadcast_mul(&real).unwrap(), &expected["logits.0"].broadcast_mul(&real).unwrap());
    assert!(diff <= 1e-4, "logits differ by {diff}");
}

#[test]
fn dropout_changes_training_outputs_and_is_seeded() {
    let dir = common::fixtures().join("parity/xlm-roberta");
    let (model, inputs) = load_fixture(&dir, "model");
    let batch = batch(&model, &inputs["batches"][0]);
    let eval = model.forward(&batch, None).unwrap();
    let mut rng = xner::model::DropoutRng::new(7);
    let train_a = model.forward(&batch, Some(&mut rng)).unwrap();
    let mut rng = xner::model::DropoutRng::new(7);
    let train_b = model.forward(&batch, Some(&mut rng)).unwrap();
    assert!(max_abs_diff(&eval, &train_a) > 1e-3, "dropout must act in training mode");
    assert_eq!(max_abs_diff(&train_a, &train_b), 0.0, "same seed, same masks");
}

#[test]
fn inference_after_an_update_reads_the_updated_weights() {
    // Inference keeps transposed copies of the weights; a training step must retire them.
    let dir = common::fixtures().join("parity/xlm-roberta");
    let (model, inputs) = load_fixture(&dir, "model");
    let batch = batch(&model, &inputs["batches"][0]);
    let real = real_positions(&batch);
    let before = model.forward(&batch, None).unwrap().broadcast_mul(&real).unwrap();
    let mut opt = xner::optim::AdamW::new(&model.params, xner::optim::AdamWConfig::default()).unwrap();
    let mut rng = xner::model::DropoutRng::new(3);
    xner::train::train_step(&model, &mut opt, &batch, &mut rng, 1e-2, 1.0).unwrap().expect("labelled batch");
    let after = model.forward(&batch, None).unwrap().broadcast_mul(&real).unwrap();
    // The autograd path reads the parameters themselves, never the inference copies.
    let (tracked, _) = model.forward_train(&batch, None).unwrap();
    let tracked = tracked.broadcast_mul(&real).unwrap();
    assert!(max_abs_diff(&before, &after) > 1e-3, "the update must change the logits");
    let diff = max_abs_diff(&after, &tracked);
    assert!(diff <= 1e-5, "inference and the training path differ by {diff} after an update");
}
