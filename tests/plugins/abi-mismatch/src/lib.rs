//! A test-only plugin whose root module has another layout than the host's (as if built
//! against an incompatible runanywhere-plugin-api) while claiming the right version
//! number: abi_stable's layout check must refuse it.
#![allow(non_local_definitions)]
// The symbols abi_stable generates for the root module carry no docs.
#![allow(missing_docs)]

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule, package_version_strings,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RString, StableAbi,
};

/// Claims the host's version.
#[no_mangle]
pub static RUNANYWHERE_PLUGIN_API_VERSION: u32 = runanywhere_plugin_api::PLUGIN_API_VERSION;

/// Same name as the real root module, different fields.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// Right version...
    pub api_version: u32,
    /// ...wrong second field.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(RString) -> RString,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "runanywhere_plugin";
    const NAME: &'static str = "runanywhere_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn init(s: RString) -> RString {
    s
}

/// The mismatched root module.
#[export_root_module]
pub fn runanywhere_root_module() -> PluginModRef {
    PluginMod {
        api_version: runanywhere_plugin_api::PLUGIN_API_VERSION,
        init,
    }
    .leak_into_prefix()
}
