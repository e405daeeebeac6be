//! DreamStream control node. The live path (web tier, stream actors, scheduler)
//! lands with the control-node issue; until then this binary only reports that.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the control node is not built yet; see `gpu-node --help` for the processor")
}
