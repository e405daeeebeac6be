pub struct LiveArgs;
impl clap::FromArgMatches for LiveArgs {
    fn from_arg_matches(_: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(LiveArgs)
    }
    fn update_from_arg_matches(&mut self, _: &clap::ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}
impl clap::Args for LiveArgs {
    fn augment_args(c: clap::Command) -> clap::Command {
        c
    }
    fn augment_args_for_update(c: clap::Command) -> clap::Command {
        c
    }
}
pub fn run(_: LiveArgs) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
