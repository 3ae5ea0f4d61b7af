//! Model names as requests give them, made into what the runtime loads.
//!
//! A request's `model` is an alias from the command line, a model the server was started
//! with, a store id, or a catalog id, each optionally followed by `@ENGINE` to choose the
//! engine (`stories260k@candle`): the same model on two engines side by side. File paths
//! are refused from the network (a client must not make the server open arbitrary
//! files); only `--model` on the command line may name one.

use std::path::Path;

use runanywhere::store::validate_id;
use runanywhere::{ResolvedModel, Runtime};

use crate::error::ApiError;

/// A model the server was started with (`--model`) or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// The name requests use.
    pub name: String,
    /// The reference it stands for (a path, a store id, a catalog id).
    pub reference: String,
    /// The engine, when the reference chose one.
    pub engine: Option<String>,
    /// Whether it is loaded at start (`--model`; an alias is loaded on first use).
    pub preload: bool,
}

/// A request's model, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// The name to report back (as the request gave it).
    pub name: String,
    /// What to load.
    pub resolved: ResolvedModel,
    /// The engine, when one was chosen.
    pub engine: Option<String>,
}

/// Splits `MODEL@ENGINE` when ENGINE is an engine id `is_engine` knows (a Hub
/// revision, `hf.co/o/r/f.gguf@main`, is not one).
pub fn split_engine(reference: &str, is_engine: impl Fn(&str) -> bool) -> (&str, Option<&str>) {
    match reference.rsplit_once('@') {
        Some((model, engine)) if !model.is_empty() && is_engine(engine) => (model, Some(engine)),
        _ => (reference, None),
    }
}

/// The names the server answers to.
#[derive(Debug, Clone, Default)]
pub struct ModelNames {
    served: Vec<ServedModel>,
    /// The engine ids the manifests declare (read once: requests must not re-read the
    /// plugin directories).
    engines: Vec<String>,
}

impl ModelNames {
    /// The names for `models` (`--model`, each named by its store id or file name) and
    /// `aliases` (`NAME=MODEL`).
    pub fn new(models: &[String], aliases: &[(String, String)], engines: Vec<String>) -> Self {
        let is_engine = |id: &str| engines.iter().any(|e| e == id);
        let mut served = Vec::new();
        for (name, reference) in aliases {
            let (model, engine) = split_engine(reference, is_engine);
            served.push(ServedModel {
                name: name.clone(),
                reference: model.to_string(),
                engine: engine.map(str::to_string),
                preload: false,
            });
        }
        for reference in models {
            let (model, engine) = split_engine(reference, is_engine);
            let base = Path::new(model)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| model.to_string());
            let name = match engine {
                Some(e) => format!("{base}@{e}"),
                None => base,
            };
            if served.iter().any(|s: &ServedModel| s.name == name) {
                continue;
            }
            served.push(ServedModel {
                name,
                reference: model.to_string(),
                engine: engine.map(str::to_string),
                preload: true,
            });
        }
        ModelNames { served, engines }
    }

    /// The models the command line named, aliases first.
    pub fn served(&self) -> &[ServedModel] {
        &self.served
    }

    /// The served model a name (or `name@ENGINE`) stands for.
    fn lookup(&self, name: &str, is_engine: &dyn Fn(&str) -> bool) -> Option<ServedModel> {
        let exact = self.served.iter().find(|s| s.name == name);
        if let Some(s) = exact.or_else(|| self.served.iter().find(|s| s.reference == name)) {
            return Some(s.clone());
        }
        let (model, engine) = split_engine(name, is_engine);
        let engine = engine?;
        let base = self
            .served
            .iter()
            .find(|s| s.name == model || s.reference == model)?;
        Some(ServedModel {
            name: name.to_string(),
            reference: base.reference.clone(),
            engine: Some(engine.to_string()),
            preload: false,
        })
    }

    /// Resolves a request's `model` (blocking: it may read the store, or pull a catalog
    /// model on first use).
    pub fn resolve(&self, runtime: &Runtime, requested: &str) -> Result<Target, ApiError> {
        let is_engine = |id: &str| self.engines.iter().any(|e| e == id);
        let requested_name = requested.trim();
        if requested_name.is_empty() {
            return Err(ApiError::bad_request("`model` is empty").with_param("model"));
        }
        // Ollama clients add the default tag.
        let name = requested_name
            .strip_suffix(":latest")
            .unwrap_or(requested_name);
        if let Some(served) = self.lookup(name, &is_engine) {
            let resolved =
                runtime.resolve(&served.reference, &mut runanywhere::store::NoProgress)?;
            return Ok(Target {
                name: requested_name.to_string(),
                resolved,
                engine: served.engine,
            });
        }
        let (model, engine) = split_engine(name, is_engine);
        let is_hub = model.starts_with("hf.co/");
        if !is_hub && validate_id(model).is_err() {
            return Err(ApiError::not_found(format!(
                "no model `{model}`: a request names a model the server was started with, an \
                 alias, a store id or a catalog id (file paths are accepted only by `serve \
                 --model`)"
            ))
            .with_param("model"));
        }
        let store = runtime.store()?;
        let resolved = match store.get(model).map_err(runanywhere::Error::from)? {
            Some(entry) => ResolvedModel::from_store(&store, entry),
            None => {
                let catalog = runanywhere::store::Catalog::builtin()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                // Only a catalog or Hub reference is pulled on first use, and never a name
                // that happens to be a file where the server runs.
                let pullable = (catalog.get(model).is_some() || is_hub)
                    && std::fs::symlink_metadata(model).is_err();
                if !pullable {
                    return Err(ApiError::not_found(format!(
                        "no model `{model}` in the store ({}) or the catalog; `runanywhere \
                         models` lists the store, `runanywhere catalog` the catalog",
                        store.home().display()
                    ))
                    .with_param("model"));
                }
                runtime.resolve(model, &mut runanywhere::store::NoProgress)?
            }
        };
        Ok(Target {
            name: requested_name.to_string(),
            resolved,
            engine: engine.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines(id: &str) -> bool {
        matches!(id, "candle" | "llama-cpp" | "mock")
    }

    fn engine_ids() -> Vec<String> {
        ["candle", "llama-cpp", "mock"].map(String::from).to_vec()
    }

    #[test]
    fn engine_suffix_is_split_only_for_known_engines() {
        assert_eq!(split_engine("m@candle", engines), ("m", Some("candle")));
        assert_eq!(
            split_engine("hf.co/o/r/f.gguf@main", engines),
            ("hf.co/o/r/f.gguf@main", None)
        );
        assert_eq!(split_engine("@candle", engines), ("@candle", None));
    }

    #[test]
    fn command_line_models_are_named_by_file_name_and_aliases_win() {
        let names = ModelNames::new(
            &["/data/stories260K.gguf".into(), "mock@mock".into()],
            &[("tiny".into(), "/data/stories260K.gguf@candle".into())],
            engine_ids(),
        );
        let served = names.served();
        assert_eq!(served[0].name, "tiny");
        assert_eq!(served[0].engine.as_deref(), Some("candle"));
        // The file is served under its alias (on candle) and its own name (on the engine
        // chosen for it); the mock under `mock@mock`.
        assert_eq!(served.len(), 3);
        assert_eq!(
            (served[1].name.as_str(), served[1].engine.as_deref()),
            ("stories260K.gguf", None)
        );
        assert_eq!(served[2].name, "mock@mock");
        assert_eq!(
            names.lookup("tiny@llama-cpp", &engines).map(|s| s.engine),
            Some(Some("llama-cpp".into()))
        );
    }
}
