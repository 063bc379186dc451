pub fn run_loop(ctx: &mut crate::daemon::DaemonContext) -> crate::Result<()> {
    crate::daemon::idle_loop(ctx)
}
