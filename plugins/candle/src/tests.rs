//! The engine on real data, without the host: exact greedy references for every format,
//! KV cache against full recomputation, threads, and bad inputs.

use std::path::{Path, PathBuf};

use abi_stable::std_types::RVec;
use runanywhere_plugin_api::{ErrorKind, Prompt, SamplingParams, SinkControl, StopReason};
use runanywhere_tests::{data_dir, tinystories_references};
use serde_json::json;

use super::*;

fn engine() -> CandleEngine {
    CandleEngine::init(&InitRequest {
        engine_id: "candle".into(),
        manifest_dir: "".into(),
        options: RVec::new(),
        host_api_version: runanywhere_plugin_api::PLUGIN_API_VERSION,
    })
    .unwrap()
}

fn load(path: &Path, threads: u32) -> Result<CandleModel, EngineError> {
    engine().load_model(&LoadRequest {
        model_path: path.to_string_lossy().into_owned().into(),
        context_length: 256,
        threads,
        ..Default::default()
    })
}

fn stories(ext: &str) -> PathBuf {
    data_dir().join(format!("tinystories/stories260K.{ext}"))
}

fn greedy(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.max_tokens = max_tokens;
    r.sampling = SamplingParams::greedy();
    r
}

/// (prompt ids, generated ids, text, stop reason).
fn generate(
    model: &CandleModel,
    request: &GenerateRequest,
) -> (Vec<u32>, Vec<u32>, String, StopReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    let mut sink = |id: u32, piece: &str| {
        ids.push(id);
        text.push_str(piece);
        SinkControl::Continue
    };
    let stats = model.generate(request, &mut sink).unwrap();
    assert_eq!(stats.generated_tokens as usize, ids.len());
    (stats.prompt_ids.to_vec(), ids, text, stats.stop_reason())
}

fn assert_references(model: &CandleModel, what: &str) {
    for r in tinystories_references() {
        let max = (201 - r.prompt_ids.len()) as u32;
        let (prompt, ids, _, reason) =
            generate(model, &greedy(Prompt::Text(r.prompt.as_str().into()), max));
        assert_eq!(prompt, r.prompt_ids, "{what} {:?}", r.prompt);
        assert_eq!(
            ids,
            r.all_ids[r.prompt_ids.len()..],
            "{what} {:?}",
            r.prompt
        );
        assert_eq!(reason, StopReason::MaxTokens);
    }
}

#[test]
fn stories260k_gguf_matches_the_greedy_reference() {
    assert_references(&load(&stories("gguf"), 1).unwrap(), "gguf");
}

#[test]
fn stories260k_llama2c_matches_the_greedy_reference() {
    assert_references(&load(&stories("bin"), 1).unwrap(), "llama2c");
}

#[test]
fn hf_folders_written_from_gguf_and_llama2c_match_the_greedy_reference() {
    let tmp = tempfile::tempdir().unwrap();
    for ext in ["gguf", "bin"] {
        let out = tmp.path().join(ext);
        runanywhere_convert::write_hf_folder(&stories(ext), &out).unwrap();
        let model = load(&out, 1).unwrap();
        assert_eq!(model.info().architecture.as_str(), "llama");
        assert_references(&model, &format!("hf from {ext}"));
    }
}

/// A Hugging Face folder of stories260K (from the GGUF) in a temporary directory.
fn hf_folder(tmp: &Path, name: &str) -> PathBuf {
    let out = tmp.join(name);
    runanywhere_convert::write_hf_folder(&stories("gguf"), &out).unwrap();
    out
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn qwen2_and_mistral_folders_run_the_same_function_exactly() {
    // Qwen2 is Llama with q/k/v biases and Hugging Face's rotary layout: with zero biases
    // it computes the same logits, so the references must come out unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let llama = hf_folder(tmp.path(), "llama");
    let qwen = tmp.path().join("qwen2");
    std::fs::create_dir(&qwen).unwrap();
    let mut tensors =
        candle_core::safetensors::load(llama.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let config = read_json(&llama.join("config.json"));
    let layers = config["num_hidden_layers"].as_u64().unwrap();
    for l in 0..layers {
        for proj in ["q_proj", "k_proj", "v_proj"] {
            let w = &tensors[&format!("model.layers.{l}.self_attn.{proj}.weight")];
            let rows = w.dims()[0];
            let bias = candle_core::Tensor::zeros(
                rows,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            tensors.insert(format!("model.layers.{l}.self_attn.{proj}.bias"), bias);
        }
    }
    candle_core::safetensors::save(&tensors, qwen.join("model.safetensors")).unwrap();
    let mut qconfig = config.clone();
    qconfig["model_type"] = json!("qwen2");
    qconfig["architectures"] = json!(["Qwen2ForCausalLM"]);
    qconfig["sliding_window"] = json!(4096);
    qconfig["max_window_layers"] = json!(layers);
    qconfig["use_sliding_window"] = json!(false);
    write_json(&qwen.join("config.json"), &qconfig);
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(llama.join(f), qwen.join(f)).unwrap();
    }
    let model = load(&qwen, 1).unwrap();
    assert_eq!(model.info().architecture.as_str(), "qwen2");
    assert_references(&model, "qwen2");

    let mut mconfig = config;
    mconfig["model_type"] = json!("mistral");
    write_json(&llama.join("config.json"), &mconfig);
    let model = load(&llama, 1).unwrap();
    assert_eq!(model.info().architecture.as_str(), "mistral");
    assert_references(&model, "mistral");
}

/// Logits after `ids` computed three ways must agree: one forward pass over everything,
/// a prompt then one token at a time (the KV cache), and chunks of 7.
#[test]
fn kv_cache_and_chunked_prefill_match_full_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = hf_folder(tmp.path(), "hf");
    let ids: Vec<u32> = tinystories_references()[1].all_ids[..40].to_vec();
    for path in [stories("gguf"), stories("bin"), folder] {
        let model = load(&path, 1).unwrap();
        let mut backend = model.backend.as_ref().unwrap().lock().unwrap();
        backend.reset().unwrap();
        let full = backend.forward(&ids, 0).unwrap();
        backend.reset().unwrap();
        let mut step = backend.forward(&ids[..5], 0).unwrap();
        for (i, &id) in ids.iter().enumerate().skip(5) {
            step = backend.forward(&[id], i).unwrap();
        }
        backend.reset().unwrap();
        let mut chunked = Vec::new();
        for (c, chunk) in ids.chunks(7).enumerate() {
            chunked = backend.forward(chunk, c * 7).unwrap();
        }
        for (what, other) in [("kv cache", &step), ("chunks", &chunked)] {
            let diff = full
                .iter()
                .zip(other.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{}: {what} differs by {diff}", path.display());
        }
        assert_eq!(full.len(), 512);
    }
}

#[test]
fn thread_counts_do_not_change_the_output() {
    let run = |threads: u32| {
        let model = load(&stories("gguf"), threads).unwrap();
        let info = model.info();
        let t = info
            .extensions
            .iter()
            .find(|kv| kv.key.as_str() == "threads")
            .unwrap();
        if threads > 0 {
            assert_eq!(t.value.as_str(), threads.to_string());
        }
        let mut r = greedy(Prompt::Text("The little dog".into()), 80);
        r.sampling.temperature = 0.7;
        r.sampling.seed = 5;
        generate(&model, &r).1
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(0));
}

#[test]
fn sampling_seeds_and_id_prompts() {
    // Cancellation, stop strings, max_tokens, context overflow, out-of-vocabulary ids
    // and vocab-only loads are the engine contract, tested for every engine at once in
    // tests/integration/contract.rs.
    let model = load(&stories("gguf"), 1).unwrap();
    let sampled = |seed: u64| {
        let mut r = greedy(Prompt::Text("Once upon a time".into()), 40);
        r.sampling = SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        };
        generate(&model, &r).1
    };
    assert_eq!(sampled(11), sampled(11));
    assert_ne!(sampled(11), sampled(12));
    // top_k = 1 is greedy at any temperature.
    let mut r = greedy(Prompt::Text("Once upon a time".into()), 30);
    r.sampling = SamplingParams {
        temperature: 3.0,
        top_k: 1,
        seed: 9,
        ..SamplingParams::default()
    };
    let reference = &tinystories_references()[1];
    assert_eq!(generate(&model, &r).1, reference.all_ids[5..35]);

    // Ids as the prompt.
    let (prompt, ids, _, _) = generate(&model, &greedy(Prompt::Ids(vec![1, 403, 407].into()), 3));
    assert_eq!(prompt, vec![1, 403, 407]);
    assert_eq!(ids, reference.all_ids[3..6]);
    let mut sink = |_: u32, _: &str| SinkControl::Continue;
    let mut bad = greedy(Prompt::Text("x".into()), 3);
    bad.sampling.temperature = f32::NAN;
    assert_eq!(
        model.generate(&bad, &mut sink).unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        model.token_piece(512).unwrap_err().kind(),
        ErrorKind::InvalidRequest
    );
    assert_eq!(model.token_piece(403).unwrap(), b" Once");
    assert_eq!(model.detokenize(&[1, 403, 407]).unwrap(), " Once upon");
}

#[test]
fn a_full_context_and_the_context_policy() {
    let small = engine()
        .load_model(&LoadRequest {
            model_path: stories("gguf").to_string_lossy().into_owned().into(),
            context_length: 8,
            threads: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(small.info().context_length, 8);
    let (_, ids, _, reason) = generate(&small, &greedy(Prompt::Text("Once upon a time".into()), 0));
    assert_eq!(reason, StopReason::ContextFull);
    assert_eq!(ids, tinystories_references()[1].all_ids[5..9]);
    // Without a context length, the GGUF's own (128) applies; llama2.c's seq_len is 512.
    let default = |ext: &str| {
        engine()
            .load_model(&LoadRequest {
                model_path: stories(ext).to_string_lossy().into_owned().into(),
                ..Default::default()
            })
            .unwrap()
            .info()
            .context_length
    };
    assert_eq!(default("gguf"), 128);
    assert_eq!(default("bin"), 512);
    // Candle's quantized GGUF llama has rotary tables for 4096 positions: more is
    // refused with the limit (one policy for every engine; llama.cpp has no such limit).
    let err = engine()
        .load_model(&LoadRequest {
            model_path: stories("gguf").to_string_lossy().into_owned().into(),
            context_length: 5000,
            ..Default::default()
        })
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(err.message().contains("at most 4096"), "{}", err.message());
}

#[test]
fn model_info_tokenizers_and_vocab_only_loads() {
    let model = load(&stories("gguf"), 1).unwrap();
    let info = model.info();
    assert_eq!(info.vocab_size, 512);
    assert_eq!(info.bos.into_option(), Some(1));
    assert_eq!(info.eos.into_option(), Some(2));
    assert_eq!(info.eog.to_vec(), vec![2]);
    assert_eq!(info.train_context_length, 128);
    // 64·512 embedding + output, 5 blocks of attention and MLP, norms.
    assert_eq!(
        info.parameter_count,
        2 * 512 * 64 + 5 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 172 + 128) + 64
    );

    let vocab_only = engine()
        .load_model(&LoadRequest {
            model_path: data_dir()
                .join("vocab/ggml-vocab-gpt-2.gguf")
                .to_string_lossy()
                .into_owned()
                .into(),
            vocab_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(vocab_only.info().architecture.as_str(), "gpt2");
    assert_eq!(
        vocab_only.tokenize("Hello world", false, false).unwrap(),
        vec![15496, 995]
    );

    // A llama2.c checkpoint away from its tokenizer needs `tokenizer_path`.
    let tmp = tempfile::tempdir().unwrap();
    let lonely = tmp.path().join("stories260K.bin");
    std::fs::copy(stories("bin"), &lonely).unwrap();
    let err = load(&lonely, 1).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidModel);
    assert!(err.message().contains("tok512.bin"), "{}", err.message());
    let model = engine()
        .load_model(&LoadRequest {
            model_path: lonely.to_string_lossy().into_owned().into(),
            tokenizer_path: Some(
                data_dir()
                    .join("tinystories/tok512.bin")
                    .to_string_lossy()
                    .into_owned()
                    .into(),
            )
            .into(),
            context_length: 256,
            threads: 1,
            ..Default::default()
        })
        .unwrap();
    assert_references(&model, "llama2c with tokenizer_path");

    // A folder's chat template and generation config reach the model info.
    let folder = hf_folder(tmp.path(), "hf");
    let mut tc = read_json(&folder.join("tokenizer_config.json"));
    tc["chat_template"] = json!("{{ messages[0].content }}");
    write_json(&folder.join("tokenizer_config.json"), &tc);
    write_json(
        &folder.join("generation_config.json"),
        &json!({"bos_token_id": 1, "eos_token_id": [2, 13]}),
    );
    let info = load(&folder, 1).unwrap().info();
    assert_eq!(
        info.chat_template.into_option().unwrap().as_str(),
        "{{ messages[0].content }}"
    );
    assert_eq!(info.eog.to_vec(), vec![2, 13]);
    assert_eq!(info.architecture.as_str(), "llama");
    // Its weights file stands for the folder.
    assert!(load(&folder.join("model.safetensors"), 1).is_ok());
}

#[test]
fn llama2_tiny_random_f16_gguf_with_its_own_classifier_generates() {
    let model = load(&data_dir().join("gguf/llama-2-tiny-random.gguf"), 1).unwrap();
    assert_eq!(model.info().vocab_size, 32000);
    let (prompt, ids, _, reason) =
        generate(&model, &greedy(Prompt::Text("Hello world".into()), 16));
    assert_eq!(prompt, vec![1, 15043, 3186]);
    // Random weights with near-tied logits: only the count is exact across engines.
    assert_eq!(ids.len(), 16);
    assert_eq!(reason, StopReason::MaxTokens);
}

#[test]
fn bad_inputs_are_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let gguf = std::fs::read(stories("gguf")).unwrap();
    let bin = std::fs::read(stories("bin")).unwrap();
    let random = runanywhere_tests::random_bytes(0x2545_f491_4f6c_dd1d, 50_000);
    let mut gguf_noise = b"GGUF\x03\x00\x00\x00".to_vec();
    gguf_noise.extend_from_slice(&random);
    let mut cases = vec![
        write("empty.gguf", b""),
        write("random.bin", &random),
        write("gguf-noise.gguf", &gguf_noise),
        write("short.bin", &bin[..bin.len() - 4]),
        tmp.path().join("missing.gguf"),
    ];
    for cut in [
        3,
        4,
        8,
        24,
        100,
        1000,
        100_000,
        gguf.len() / 2,
        gguf.len() - 1,
    ] {
        cases.push(write(&format!("cut-{cut}.gguf"), &gguf[..cut]));
    }
    let empty_dir = tmp.path().join("empty-dir");
    std::fs::create_dir(&empty_dir).unwrap();
    cases.push(empty_dir);
    // Folders with a missing tensor, a wrong shape, no tokenizer.
    let missing_tensor = hf_folder(tmp.path(), "missing-tensor");
    let mut t = candle_core::safetensors::load(
        missing_tensor.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    t.remove("model.layers.3.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, missing_tensor.join("model.safetensors")).unwrap();
    cases.push(missing_tensor);
    let wrong_shape = hf_folder(tmp.path(), "wrong-shape");
    let mut c = read_json(&wrong_shape.join("config.json"));
    c["intermediate_size"] = json!(173);
    write_json(&wrong_shape.join("config.json"), &c);
    cases.push(wrong_shape);
    let no_tokenizer = hf_folder(tmp.path(), "no-tokenizer");
    std::fs::remove_file(no_tokenizer.join("tokenizer.json")).unwrap();
    cases.push(no_tokenizer);

    for path in &cases {
        let err = load(path, 1)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()));
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidModel,
            "{}: {}",
            path.display(),
            err.message()
        );
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            err.message().contains(&*name),
            "{}: {}",
            path.display(),
            err.message()
        );
    }

    // Well-formed but not what this engine runs.
    let other_arch = hf_folder(tmp.path(), "gpt-neox");
    let mut c = read_json(&other_arch.join("config.json"));
    c["model_type"] = json!("gpt_neox");
    write_json(&other_arch.join("config.json"), &c);
    for path in [other_arch, data_dir().join("vocab/ggml-vocab-gpt-2.gguf")] {
        let err = load(&path, 1).err().unwrap();
        assert_eq!(
            err.kind(),
            ErrorKind::UnsupportedFormat,
            "{}: {}",
            path.display(),
            err.message()
        );
    }
}
