//! `git push` over SSH: a russh server that authenticates users by their registered public keys
//! and runs [`GitServer::receive_pack`] for `git-receive-pack 'APP.git'`.
//!
//! Only public-key authentication is offered (no passwords, no keyboard-interactive). The login
//! name does not matter (`git@host` is customary): the key identifies the user through
//! [`Accounts::authenticate_key`]. The only command accepted is `git-receive-pack` with a
//! repository path like `'APP.git'`, `'/APP.git'`, `APP` or `"APP.git"`; shells, ptys,
//! subsystems, `git-upload-pack` and every other command are refused with a message on stderr
//! and exit status 1.
//!
//! The host key (ed25519) is generated on the first start at the given path (mode 0600) and read
//! from there afterwards, so clients see the same host key across restarts.
//!
//! Flow control: the push is read from the channel as it arrives and output is written only as
//! the client's channel window allows. When the client goes away (connection dropped or channel
//! closed), writes to the output fail at once, which makes the git server cancel a running build.
//!
//! ```no_run
//! use hephy_git::{auth::Accounts, ssh::SshServer, GitServer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = std::path::Path::new("/var/lib/hephy");
//! let accounts = Accounts::open(data)?;
//! let git = GitServer::builder(data).accounts(accounts.clone()).build()?;
//! let ssh = SshServer::new(git, accounts, data.join("ssh_host_ed25519_key"))?;
//! println!("host key {}", ssh.host_key_fingerprint());
//! ssh.run(tokio::net::TcpListener::bind("0.0.0.0:2222").await?).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hephy_core::fs::{create_atomic, FileMode};
use hephy_core::AppName;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Certificate, HashAlg, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Accounts, User};
use crate::{GitServer, ReceiveError};

/// How long a connection may stay completely silent before it is dropped.
const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often an idle client is asked whether it is still there; three unanswered asks close
/// the connection, which cancels a build whose pusher vanished without closing the socket.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// The error returned by [`SshServer::new`], [`SshServer::run`] and [`GitServer::serve_ssh`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The host key file could not be read, created or written.
    #[error("cannot {action} the SSH host key {path}: {source}; check that its directory exists and is writable by this process")]
    HostKeyIo {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The host key file exists but is not a usable OpenSSH private key.
    #[error("the SSH host key {path} is not usable: {problem}; restore the original key file (clients pin it), or delete it to generate a new one (clients will then warn that the host key changed)")]
    HostKeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Accepting connections failed.
    #[error("the SSH server stopped accepting connections: {0}")]
    Serve(#[source] io::Error),
    /// [`GitServer::serve_ssh`] was called on a server without accounts, which SSH needs to
    /// know whose key is whose.
    #[error("SSH needs accounts to authenticate keys: build the GitServer with .accounts(Accounts::open(data_dir)?), or serve HTTP only")]
    NoAccounts,
}

/// The SSH front end of a [`GitServer`]: public-key auth against [`Accounts`] and
/// `git-receive-pack` as the only command.
#[derive(Clone)]
pub struct SshServer {
    shared: Arc<Shared>,
    host_key: PrivateKey,
}

impl std::fmt::Debug for SshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshServer")
            .field("host_key", &self.host_key_fingerprint())
            .finish_non_exhaustive()
    }
}

struct Shared {
    git: GitServer,
    accounts: Accounts,
}

impl SshServer {
    /// Creates the server with the host key at `host_key_path`: read if the file exists, else a
    /// new ed25519 key is generated and written there with mode 0600.
    pub fn new(
        git_server: GitServer,
        accounts: Accounts,
        host_key_path: impl AsRef<Path>,
    ) -> Result<SshServer, SshError> {
        let host_key = load_or_create_host_key(host_key_path.as_ref())?;
        Ok(SshServer {
            shared: Arc::new(Shared {
                git: git_server,
                accounts,
            }),
            host_key,
        })
    }

    /// The host's public key, for a `known_hosts` line.
    pub fn host_public_key(&self) -> &PublicKey {
        self.host_key.public_key()
    }

    /// The host key's SHA-256 fingerprint as OpenSSH prints it (`SHA256:...`).
    pub fn host_key_fingerprint(&self) -> String {
        self.host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// Serves SSH connections from `listener` until accepting fails. Each connection runs in
    /// its own task; dropping this future stops accepting new ones.
    /// Needs a tokio runtime with time and IO enabled (`#[tokio::main]` has both): each push
    /// session refuses any other with [`ReceiveError::Runtime`].
    pub async fn run(&self, listener: TcpListener) -> Result<(), SshError> {
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        let config = russh::server::Config {
            server_id: russh::SshId::Standard(
                concat!("SSH-2.0-hephy_", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods,
            // OpenSSH probes with "none" first; answering it at once saves a second per push.
            auth_rejection_time_initial: Some(Duration::ZERO),
            auth_rejection_time: Duration::from_secs(1),
            keys: vec![self.host_key.clone()],
            inactivity_timeout: Some(INACTIVITY_TIMEOUT),
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: 3,
            nodelay: true,
            ..russh::server::Config::default()
        };
        let mut acceptor = Acceptor {
            shared: self.shared.clone(),
        };
        russh::server::Server::run_on_socket(&mut acceptor, Arc::new(config), &listener)
            .await
            .map_err(SshError::Serve)
    }
}

fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, SshError> {
    let io_err = |action, source| SshError::HostKeyIo {
        action,
        path: path.to_owned(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let key = PrivateKey::from_openssh(&bytes).map_err(|e| SshError::HostKeyInvalid {
                path: path.to_owned(),
                problem: e.to_string(),
            })?;
            if key.is_encrypted() {
                return Err(SshError::HostKeyInvalid {
                    path: path.to_owned(),
                    problem: "it is encrypted with a passphrase, which a server cannot type"
                        .to_owned(),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| io_err("generate", io::Error::other(e)))?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| io_err("encode", io::Error::other(e)))?;
            // 0600 from the first byte, and never replacing a key a second server starting at
            // the same moment already uses.
            create_atomic(path, text.as_bytes(), FileMode::Private)
                .map_err(|e| io_err("write", e))?;
            tracing::info!(
                path = %path.display(),
                fingerprint = %key.public_key().fingerprint(HashAlg::Sha256),
                "generated a new SSH host key"
            );
            Ok(key)
        }
        Err(e) => Err(io_err("read", e)),
    }
}

/// Makes one [`Connection`] per accepted client.
struct Acceptor {
    shared: Arc<Shared>,
}

impl russh::server::Server for Acceptor {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            shared: self.shared.clone(),
            peer,
            user: None,
            channels: HashMap::new(),
            open: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "SSH connection ended with an error");
    }
}

/// The state of one SSH connection. It is dropped when the connection ends, which closes the
/// `open` signals and so makes every running push's output fail.
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    user: Option<User>,
    /// Session channels opened but not yet running a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// One signal per channel running a push; dropping the sender tells its writer that the
    /// client is gone.
    open: HashMap<ChannelId, watch::Sender<()>>,
}

impl Connection {
    /// Answers a command that is not served: a message on stderr, exit status 1, channel closed.
    fn refuse(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        message: &str,
    ) -> Result<(), russh::Error> {
        tracing::info!(user = %self.user_label(), peer = ?self.peer, message, "SSH request refused");
        self.channels.remove(&channel);
        session.channel_success(channel)?;
        session.extended_data(channel, 1, format!("hephy: {message}\r\n").into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }

    fn user_label(&self) -> String {
        self.user
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |u| u.name.clone())
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _login: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Refuse unknown keys before the client signs with them, so it moves on to its next key.
        Ok(
            match self.shared.accounts.authenticate_key(offer.public_key) {
                Some(_) => Auth::Accept,
                None => Auth::reject(),
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        _login: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.shared.accounts.authenticate_key(key.public_key) {
            Some(user) => {
                tracing::debug!(user = %user.name, peer = ?self.peer, "SSH key accepted");
                self.user = Some(user);
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(
                    fingerprint = %key.public_key.fingerprint(HashAlg::Sha256),
                    peer = ?self.peer,
                    "SSH key refused: not registered for any user"
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        _login: &str,
        _certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.open.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the trait's signature
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let message = format!(
            "hi {}! You are authenticated, but hephy does not provide shell access; deploy with `git push ssh://git@HOST:PORT/APP.git main`",
            self.user_label()
        );
        self.refuse(channel, session, &message)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let message =
            format!("the subsystem {name:?} is not served; this server only accepts `git push`");
        self.refuse(channel, session, &message)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        let app = match parse_command(&command) {
            Ok(app) => app,
            Err(refusal) => return self.refuse(channel, session, &refusal.to_string()),
        };
        let Some(user) = self.user.clone() else {
            // russh only runs requests after authentication; this is a second line of defence.
            return self.refuse(channel, session, "not authenticated");
        };
        let Some(chan) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        tracing::info!(user = %user.name, %app, peer = ?self.peer, "git push over SSH");
        let (open_tx, open_rx) = watch::channel(());
        self.open.insert(channel, open_tx);
        let git = self.shared.git.clone();
        tokio::spawn(serve_push(git, user, app, chan, open_rx));
        Ok(())
    }
}

/// Runs one `git-receive-pack` session on a channel and ends the channel with its exit status.
async fn serve_push(
    git: GitServer,
    user: User,
    app: AppName,
    channel: Channel<Msg>,
    open: watch::Receiver<()>,
) {
    let (mut read_half, write_half) = channel.split();
    let output = ChannelOutput::new(write_half.make_writer(), open);
    let result = git
        .receive_pack(&user, &app, read_half.make_reader(), output)
        .await;
    let status = match &result {
        Ok(()) => 0,
        Err(error) => {
            tracing::info!(user = %user.name, %app, %error, "SSH push failed");
            // These reach the client as an `ERR` pkt-line already (git prints them as
            // `fatal: remote error: ...`); everything else is told on stderr.
            let told = matches!(
                error,
                ReceiveError::UnknownApp { .. }
                    | ReceiveError::Forbidden { .. }
                    | ReceiveError::Locked(_)
                    | ReceiveError::Connection(_)
                    | ReceiveError::Limit { .. }
                    | ReceiveError::Internal { .. }
            );
            if !told {
                let _ = write_half
                    .extended_data_bytes(1, format!("hephy: {error}\n").into_bytes())
                    .await;
            }
            1
        }
    };
    // Errors here mean the client is gone; there is nobody left to tell.
    let _ = write_half.eof().await;
    let _ = write_half.exit_status(status).await;
    let _ = write_half.close().await;
}

/// Why an exec command is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("hephy does not serve fetches or clones ({0}); it only receives `git push`, so keep cloning from your code host")]
    Fetch(String),
    #[error(
        "the command {0:?} is not served; this server only accepts `git push` (git-receive-pack)"
    )]
    Unknown(String),
    #[error("{path:?} is not a repository path: use ssh://git@HOST:PORT/APP.git where APP is the app name ({problem})")]
    BadPath { path: String, problem: String },
}

/// The app of a `git-receive-pack 'APP.git'` command (also `git receive-pack`, with or without
/// the leading `/`, the `.git` suffix or quotes).
fn parse_command(command: &str) -> Result<AppName, Refusal> {
    let command = command.trim();
    let (program, arg) = split_program(command);
    match program {
        "git-receive-pack" => {}
        "git-upload-pack" | "git-upload-archive" => return Err(Refusal::Fetch(program.to_owned())),
        _ => return Err(Refusal::Unknown(command.to_owned())),
    }
    let bad = |problem: &str| Refusal::BadPath {
        path: arg.to_owned(),
        problem: problem.to_owned(),
    };
    let unquoted = unquote(arg.trim()).ok_or_else(|| bad("the quotes do not match"))?;
    let path = unquoted.strip_prefix('/').unwrap_or(unquoted);
    let path = path.strip_suffix('/').unwrap_or(path);
    let name = path.strip_suffix(".git").unwrap_or(path);
    if name.is_empty() {
        return Err(bad("the app name is missing"));
    }
    name.parse::<AppName>().map_err(|e| bad(&e.to_string()))
}

/// Splits `git-receive-pack ARG` or `git receive-pack ARG` into the dashed program name and ARG.
fn split_program(command: &str) -> (&str, &str) {
    let (first, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    if first == "git" {
        let rest = rest.trim_start();
        let (sub, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let program = match sub {
            "receive-pack" => "git-receive-pack",
            "upload-pack" => "git-upload-pack",
            "upload-archive" => "git-upload-archive",
            _ => return (command, ""),
        };
        return (program, arg);
    }
    (first, rest)
}

/// Removes one pair of matching single or double quotes; `None` when they do not match. Paths
/// that need shell escapes inside the quotes are not app names anyway, so no unescaping.
fn unquote(arg: &str) -> Option<&str> {
    for quote in ['\'', '"'] {
        if let Some(rest) = arg.strip_prefix(quote) {
            return rest.strip_suffix(quote);
        }
        if arg.ends_with(quote) {
            return None;
        }
    }
    Some(arg)
}

/// The channel's writer, failing with `BrokenPipe` as soon as the client is gone.
///
/// russh's channel writer waits for window space before it notices a closed connection, so a
/// client that disappeared with a full window would leave a build hanging; watching the
/// connection's state fixes that. Shutdown does not send EOF here: the push task sends it once,
/// before the exit status.
struct ChannelOutput<W> {
    inner: W,
    gone: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    is_gone: bool,
}

impl<W> ChannelOutput<W> {
    fn new(inner: W, mut open: watch::Receiver<()>) -> Self {
        ChannelOutput {
            inner,
            // Nothing is ever sent on the channel: `changed` returns only when the sender is
            // dropped, that is when the channel or the connection closed.
            gone: Box::pin(async move { while open.changed().await.is_ok() {} }),
            is_gone: false,
        }
    }

    fn check_gone(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_gone && self.gone.as_mut().poll(cx).is_ready() {
            self.is_gone = true;
        }
        if self.is_gone {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the SSH client disconnected",
            ));
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ChannelOutput<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_gone(cx)?;
        if buf.is_empty() {
            // russh's writer rejects empty writes; to callers an empty write is a no-op.
            return Poll::Ready(Ok(0));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_gone(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> Result<AppName, Refusal> {
        parse_command(s)
    }

    #[test]
    fn receive_pack_paths_in_every_spelling() -> Result<(), Box<dyn std::error::Error>> {
        let web: AppName = "web".parse()?;
        for command in [
            "git-receive-pack 'web.git'",
            "git-receive-pack '/web.git'",
            "git-receive-pack 'web'",
            "git-receive-pack '/web'",
            "git-receive-pack \"web.git\"",
            "git-receive-pack web.git",
            "git-receive-pack /web.git/",
            "git receive-pack 'web.git'",
            "  git-receive-pack   'web.git'  ",
        ] {
            assert_eq!(app(command), Ok(web.clone()), "{command}");
        }
        Ok(())
    }

    #[test]
    fn everything_else_is_refused() {
        for (command, expect) in [
            ("git-upload-pack 'web.git'", "fetches"),
            ("git upload-pack 'web.git'", "fetches"),
            ("git-upload-archive 'web.git'", "fetches"),
            ("ls -la", "not served"),
            ("git-receive-pack-evil 'web.git'", "not served"),
            ("sh -c 'git-receive-pack web.git'", "not served"),
            ("", "not served"),
            ("git-receive-pack '../etc.git'", "not a repository path"),
            ("git-receive-pack 'a/b.git'", "not a repository path"),
            ("git-receive-pack '/'", "app name is missing"),
            ("git-receive-pack 'web.git", "quotes do not match"),
            ("git-receive-pack web.git'", "quotes do not match"),
            ("git-receive-pack 'Web.git'", "uppercase"),
            (
                "git-receive-pack 'web.git'; rm -rf /",
                "quotes do not match",
            ),
        ] {
            match app(command) {
                Ok(app) => panic!("{command:?} was accepted as {app}"),
                Err(e) => assert!(
                    e.to_string().contains(expect),
                    "{command:?}: expected {expect:?} in: {e}"
                ),
            }
        }
    }

    #[test]
    fn host_key_is_created_once_private_and_reused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("host_key");
        let first = load_or_create_host_key(&path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        let second = load_or_create_host_key(&path)?;
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(fs::read_dir(dir.path())?.count(), 1, "no temp files left");

        fs::write(&path, "garbage")?;
        let err = load_or_create_host_key(&path)
            .err()
            .ok_or("garbage accepted as a host key")?;
        assert!(err.to_string().contains("delete it"), "{err}");
        assert_eq!(fs::read_to_string(&path)?, "garbage", "never overwritten");
        Ok(())
    }
}
