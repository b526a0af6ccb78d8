//! `netmon echo`: the echo client on the command line.

use tokio_util::sync::CancellationToken;

use crate::base::resolve;
use crate::base::values::IpPreference;
use crate::cli::EchoArgs;
use crate::echo::client::{
    ClientError, DEFAULT_PORT, Report, Session, SessionOptions, connect, event_line, split_target,
    summary,
};
use crate::echo::wire;

/// `netmon echo`: resolves the target, runs a session, prints every event and the summary to
/// `out`. Returns whether every message came back intact. Ctrl-C (`cancel`) ends the session
/// early with a summary of what was seen.
pub async fn run(
    args: &EchoArgs,
    out: &mut (dyn std::io::Write + Send),
    cancel: &CancellationToken,
) -> Result<bool, ClientError> {
    let (host, port) = split_target(&args.target, DEFAULT_PORT)?;
    let pref = match (args.ipv4, args.ipv6) {
        (true, _) => IpPreference::Ipv4,
        (_, true) => IpPreference::Ipv6,
        _ => IpPreference::Auto,
    };
    let addrs = resolve::resolve(&host, port, pref)
        .await
        .map_err(|f| ClientError::Resolve(f.message))?;
    let peer = addrs[0];
    let socket = connect(peer).await.map_err(|source| ClientError::Socket {
        context: format!("opening a UDP socket to {peer}"),
        source,
    })?;
    let options = SessionOptions {
        count: args.count,
        interval: args.interval,
        size: usize::try_from(args.size).unwrap_or(wire::MAX_LEN),
        wait: args.timeout,
    };
    let session = Session::new(options.clone());
    let shown = if host == peer.ip().to_string() {
        peer.to_string()
    } else {
        format!("{host} ({peer})")
    };
    let _ = writeln!(
        out,
        "ECHO {shown}: {} bytes, {} messages, session {:016x}",
        options.size,
        options.count,
        session.nonce()
    );
    let mut report = Report::default();
    let result = session
        .run(&socket, cancel, &mut report, |e| {
            let _ = writeln!(out, "{}", event_line(peer, e, options.wait));
        })
        .await;
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", summary(peer, &report));
    result?;
    Ok(report.all_intact())
}
