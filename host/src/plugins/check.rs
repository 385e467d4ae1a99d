//! `weft plugin check FILE.wasm`: what a component is, before anyone installs it — the world
//! and contract version it was built for, what it imports, and whether this weft would load
//! it.

use super::manifest::World;
use super::runtime::{CONTRACT, LoadError, Runtime, contract_item};
use std::fmt;
use wasmtime::component::types::ComponentItem;

/// What `check` found.
#[derive(Debug)]
pub struct Report {
    /// The world the component exports, if it exports one of the contract's.
    pub world: Option<World>,
    /// Its contract exports, as named in the component (`weft:plugin/selector@0.1.0`).
    pub exports: Vec<String>,
    /// Every import, contract and WASI alike.
    pub imports: Vec<String>,
    /// Why this weft would refuse it, if it would.
    pub refused: Option<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.world {
            Some(w) => writeln!(f, "world:   {w}")?,
            None => writeln!(f, "world:   none (it exports no {CONTRACT} interface)")?,
        }
        writeln!(f, "exports: {}", list(&self.exports))?;
        writeln!(f, "imports: {}", list(&self.imports))?;
        match &self.refused {
            None => write!(f, "ok: this weft loads it"),
            Some(e) => write!(f, "refused: {e}"),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join("\n         ")
    }
}

/// Compiles and inspects `bytes`. `world` is the world it should be (as its manifest will
/// say); without one, the world it exports is assumed. Errors only when the bytes are not a
/// component at all.
pub fn check(bytes: &[u8], world: Option<World>) -> Result<Report, LoadError> {
    let runtime = Runtime::new(None).map_err(|e| LoadError::Link(e.to_string()))?;
    let (component, _) = runtime.compile(bytes)?;
    let engine = runtime.engine();
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .filter(|(n, item)| {
            contract_item(n).is_some() && matches!(item.ty, ComponentItem::ComponentInstance(_))
        })
        .map(|(n, _)| n.to_string())
        .collect();
    let exported = World::ALL.into_iter().find(|w| {
        exports
            .iter()
            .any(|n| contract_item(n).is_some_and(|(iface, _)| iface == w.export()))
    });
    let refused = match world.or(exported) {
        Some(w) => runtime.prepare(&component, w).err().map(|e| e.to_string()),
        None => Some(format!(
            "it exports none of the worlds of {CONTRACT} (node-selector, ping-check, ipam-sync)"
        )),
    };
    Ok(Report {
        world: exported,
        exports,
        imports,
        refused,
    })
}
