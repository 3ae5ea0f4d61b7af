//! `runanywhere plugin install|list|remove`, over the library's `plugins` module.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::plugins::{install, remove, user_plugin_dir};
use runanywhere::Runtime;

use super::args::{PluginAction, PluginArgs};

pub(crate) fn run(runtime: &Runtime, args: &PluginArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match &args.action {
        PluginAction::Install { path } => {
            let installed = install(path, &user_plugin_dir()?)?;
            writeln!(
                out,
                "Installed plugin {} ({}, library {})",
                installed.id,
                installed.manifest.display(),
                installed.library.display()
            )?;
        }
        PluginAction::List(list) => {
            drop(out);
            return super::engines::run(runtime, list);
        }
        PluginAction::Remove { id } => {
            let removed = remove(id, &user_plugin_dir()?)?;
            writeln!(
                out,
                "Removed plugin {} ({})",
                removed.id,
                removed.manifest.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
