//! Rust bindings of `wit/plugin.wit`, generated at compile time. The host's side of every
//! import is generated once (`imports`); each world's bindings reuse it, so one `Host`
//! implementation serves all three worlds.

/// The interfaces the host provides.
pub mod imports {
    wasmtime::component::bindgen!({
        path: "../wit",
        interfaces: "
            import weft:plugin/log@0.1.0;
            import weft:plugin/config@0.1.0;
            import weft:plugin/probe@0.1.0;
            import weft:plugin/ipam@0.1.0;
            import weft:plugin/http@0.1.0;
        ",
    });
}

pub mod node_selector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "node-selector",
        with: { "weft:plugin": super::imports::weft::plugin },
    });
}

pub mod ping_check {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ping-check",
        with: { "weft:plugin": super::imports::weft::plugin },
    });
}

pub mod ipam_sync {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ipam-sync",
        with: { "weft:plugin": super::imports::weft::plugin },
    });
}
