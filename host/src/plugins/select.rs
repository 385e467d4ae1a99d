//! Calling a `node-selector` plugin, with the candidates copied into it in one pass.
//!
//! wasmtime's generated lowering of a `list<candidate>` stores each field of each record on
//! its own, looking the guest's memory up again for every one: about 200 ns a candidate,
//! which made a call over 1,000 candidates cost 40 times the built-in strategy.
//! [`Candidates`] lowers the same list with one `realloc` and one bounds-checked slice of
//! guest memory, writing each record at the offsets of the canonical ABI, computed by
//! wasmtime's own layout functions. Everything else about the call (the other arguments, the
//! result, the type check against the component) is wasmtime's.

use super::bindings::imports::weft::plugin::types::Pair;
use super::bindings::node_selector::exports::weft::plugin::selector::{
    Candidate, HandshakeStats, NodeId, Request,
};
use super::call::CallState;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, ComponentVariant, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{
    ComponentExportIndex, ComponentType, Func, InstancePre, Lower, TypedFunc,
};
use wasmtime::{Store, ValRaw};

/// The interface a selector exports and its function.
const INTERFACE: &str = "weft:plugin/selector@0.1.0";
const FUNCTION: &str = "select";

/// What `select` answers: the chosen node, none, or the plugin's error.
pub type Answer = Result<Option<NodeId>, String>;

type Params<'a> = (&'a Request, &'a [Pair], Candidates<'a>);
type Select<'a> = TypedFunc<Params<'a>, (Answer,)>;

/// A `node-selector` component, linked and ready to instantiate.
#[derive(Clone)]
pub struct SelectorPre {
    pre: InstancePre<CallState>,
    select: ComponentExportIndex,
}

/// One instance of a selector, in the store it was instantiated in.
pub struct Selector {
    select: Func,
}

impl SelectorPre {
    /// Finds `select` in the component (a compatible 0.1.x export is found by wasmtime's
    /// semver matching, as the generated bindings do).
    pub fn new(pre: InstancePre<CallState>) -> wasmtime::Result<SelectorPre> {
        let component = pre.component();
        let interface = component
            .get_export_index(None, INTERFACE)
            .ok_or_else(|| wasmtime::format_err!("no exported instance {INTERFACE:?}"))?;
        let select = component
            .get_export_index(Some(&interface), FUNCTION)
            .ok_or_else(|| wasmtime::format_err!("{INTERFACE:?} does not export {FUNCTION:?}"))?;
        Ok(SelectorPre { pre, select })
    }

    /// A new instance in `store`, its `select` checked against the contract's type.
    pub fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<Selector> {
        let instance = self.pre.instantiate(&mut *store)?;
        let select = instance.get_typed_func::<Params<'_>, (Answer,)>(&mut *store, self.select)?;
        Ok(Selector {
            select: *select.func(),
        })
    }
}

impl Selector {
    pub fn select(
        &self,
        store: &mut Store<CallState>,
        request: &Request,
        labels: &[Pair],
        candidates: &[Candidate],
    ) -> wasmtime::Result<Answer> {
        // SAFETY: `instantiate` type-checked this function with these parameter and result
        // types (only their lifetimes differ), as wasmtime's generated bindings do.
        let select: Select<'_> = unsafe { TypedFunc::new_unchecked(self.select) };
        let (answer,) = select.call(store, (request, labels, Candidates(candidates)))?;
        Ok(answer)
    }
}

/// A `list<candidate>` argument, lowered in one pass (see the module's comment).
pub struct Candidates<'a>(pub &'a [Candidate]);

// SAFETY: the type, its ABI and its check are exactly those of `[Candidate]`, whose
// `ComponentType` wasmtime derives from the WIT; only the lowering differs.
unsafe impl ComponentType for Candidates<'_> {
    type Lower = <[Candidate] as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <[Candidate] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[Candidate] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes the list as the canonical ABI lays it out (the offsets come from wasmtime's
// `CanonicalAbiInfo` of each field's type, in the WIT's field order), only inside the block
// the guest's `realloc` returned, which wasmtime checked to be in bounds.
unsafe impl Lower for Candidates<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        // Pointers are always written as 64-bit values, as wasmtime's own lists do.
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}

/// Where each field of a `candidate` record lies, from its start.
struct Layout {
    id: usize,
    labels: usize,
    region: usize,
    active_peers: usize,
    max_peers: usize,
    weight: usize,
    health: usize,
    peers_with_handshake: usize,
    newest_age_secs: usize,
    oldest_age_secs: usize,
    /// From an `option<u32>`'s start to its value.
    u32_payload: usize,
    /// From an `option<u64>`'s start to its value.
    u64_payload: usize,
}

impl Layout {
    /// The canonical ABI's layout of `candidate` and `handshake-stats`, field by field in the
    /// WIT's order (a field that is added or moved there must be here too; the
    /// `every_field_reaches_the_plugin` test fails otherwise).
    fn new() -> wasmtime::Result<Layout> {
        fn at<F: ComponentType>(offset: &mut usize) -> usize {
            F::ABI.next_field32_size(offset)
        }
        let mut o = 0;
        let id = at::<NodeId>(&mut o);
        let labels = at::<u64>(&mut o);
        let region = at::<Option<u32>>(&mut o);
        let active_peers = at::<u32>(&mut o);
        let max_peers = at::<u32>(&mut o);
        let weight = at::<u32>(&mut o);
        let health = at::<super::bindings::imports::weft::plugin::types::Health>(&mut o);
        let handshakes = at::<HandshakeStats>(&mut o);
        let mut h = 0;
        let peers_with_handshake = handshakes + at::<u32>(&mut h);
        let newest_age_secs = handshakes + at::<Option<u64>>(&mut h);
        let oldest_age_secs = handshakes + at::<Option<u64>>(&mut h);
        // The records as wasmtime sees them must end where this layout does.
        if h.next_multiple_of(HandshakeStats::ALIGN32 as usize) != HandshakeStats::SIZE32
            || o.next_multiple_of(Candidate::ALIGN32 as usize) != Candidate::SIZE32
        {
            wasmtime::bail!("the candidate record's layout does not match the contract's");
        }
        Ok(Layout {
            id,
            labels,
            region,
            active_peers,
            max_peers,
            weight,
            health,
            peers_with_handshake,
            newest_age_secs,
            oldest_age_secs,
            u32_payload: <Option<u32> as ComponentVariant>::PAYLOAD_OFFSET32,
            u64_payload: <Option<u64> as ComponentVariant>::PAYLOAD_OFFSET32,
        })
    }
}

impl Candidates<'_> {
    /// Allocates the list in the guest and writes it: its address and length.
    fn store<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let layout = Layout::new()?;
        let stride = Candidate::SIZE32;
        let size = self
            .0
            .len()
            .checked_mul(stride)
            .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
        let ptr = cx.realloc(0, 0, Candidate::ALIGN32, size)?;
        let memory = cx
            .as_slice_mut()
            .get_mut(ptr..)
            .and_then(|m| m.get_mut(..size))
            .ok_or_else(|| {
                wasmtime::format_err!("the candidates do not fit in the plugin's memory")
            })?;
        for (record, c) in memory.chunks_exact_mut(stride).zip(self.0) {
            // Padding and the value of an absent option are zero, so the bytes the plugin
            // sees never depend on what its allocator left there.
            record.fill(0);
            let mut put =
                |at: usize, bytes: &[u8]| record[at..at + bytes.len()].copy_from_slice(bytes);
            put(layout.id, &c.id.to_le_bytes());
            put(layout.labels, &c.labels.to_le_bytes());
            if let Some(region) = c.region {
                put(layout.region, &[1]);
                put(layout.region + layout.u32_payload, &region.to_le_bytes());
            }
            put(layout.active_peers, &c.active_peers.to_le_bytes());
            put(layout.max_peers, &c.max_peers.to_le_bytes());
            put(layout.weight, &c.weight.to_le_bytes());
            // An enum's value is the index of its case, in one byte for up to 256 cases.
            put(layout.health, &[c.health as u8]);
            let hs = &c.handshakes;
            put(
                layout.peers_with_handshake,
                &hs.peers_with_handshake.to_le_bytes(),
            );
            for (at, age) in [
                (layout.newest_age_secs, hs.newest_age_secs),
                (layout.oldest_age_secs, hs.oldest_age_secs),
            ] {
                if let Some(secs) = age {
                    put(at, &[1]);
                    put(at + layout.u64_payload, &secs.to_le_bytes());
                }
            }
        }
        Ok((ptr, self.0.len()))
    }
}
