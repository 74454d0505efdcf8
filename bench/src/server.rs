//! The two servers under test and their private run directories: a fresh copy of the
//! pristine mailbox per measured session, pop-serve's state dir, Dovecot's config and index.

use crate::client::{self, Launch, Outcome, Script};
use crate::gen::{self, Corpus, Message};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    PopServe,
    Dovecot,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::PopServe => "pop-serve",
            Server::Dovecot => "Dovecot",
        }
    }
    fn dir_name(self) -> &'static str {
        match self {
            Server::PopServe => "pop-serve",
            Server::Dovecot => "dovecot",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mbox,
    Maildir,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Mbox => "mbox",
            Format::Maildir => "Maildir",
        }
    }
}

/// Who the servers run as, and the programs.
#[derive(Clone)]
pub struct Env {
    pub pop_serve: PathBuf,
    pub dovecot: PathBuf,
    /// (uid, gid) to switch to (when the bench runs as root), else None.
    pub drop_to: Option<(u32, u32)>,
    /// The uid/gid the servers end up running as.
    pub uid: u32,
    pub gid: u32,
    pub user: String,
}

/// One server's run directory for one mailbox.
pub struct Run {
    pub server: Server,
    pub format: Format,
    pub dir: PathBuf,
    env: Env,
}

impl Run {
    pub fn new(work: &Path, env: &Env, server: Server, format: Format) -> Self {
        Run {
            server,
            format,
            dir: work.join("run").join(server.dir_name()),
            env: env.clone(),
        }
    }

    fn owner(&self) -> Option<(u32, u32)> {
        self.env.drop_to
    }

    fn mailbox(&self) -> PathBuf {
        match self.format {
            Format::Mbox => self.dir.join("mbox"),
            Format::Maildir => self.dir.join("Maildir"),
        }
    }

    /// Wipes the run dir (copy, state, index) and copies the pristine mailbox in: the
    /// starting point of a "first session". Maildir copies are hard links: neither server
    /// writes into a message file (they rename and unlink), so the pristine tree is safe.
    pub fn fresh(&self, mbox: &Path, maildir: Option<&Path>) -> io::Result<()> {
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)?;
        }
        for d in ["", "state", "index", "home", "base", "mboxdir"] {
            let p = self.dir.join(d);
            fs::create_dir_all(&p)?;
            gen::chown(&p, self.owner())?;
        }
        match self.format {
            Format::Mbox => {
                let dst = self.mailbox();
                fs::copy(mbox, &dst)?;
                gen::chown(&dst, self.owner())?;
            }
            Format::Maildir => {
                let src = maildir.ok_or_else(|| io::Error::other("no pristine Maildir"))?;
                let dst = self.mailbox();
                for sub in ["", "new", "cur", "tmp"] {
                    fs::create_dir_all(dst.join(sub))?;
                    gen::chown(&dst.join(sub), self.owner())?;
                }
                for sub in ["new", "cur"] {
                    for e in fs::read_dir(src.join(sub))? {
                        let e = e?;
                        fs::hard_link(e.path(), dst.join(sub).join(e.file_name()))?;
                    }
                }
            }
        }
        if self.server == Server::Dovecot {
            self.write_dovecot_conf()?;
        }
        // The copy (and the removal of the previous one) is the harness's own I/O: flushed
        // here, untimed, so that neither server's first fsync pays for writing back a 1 GB
        // copy made a moment before (it did: DELE rows varied with whose fsync came first).
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(())
    }

    fn write_dovecot_conf(&self) -> io::Result<()> {
        let d = self.dir.display();
        let location = match self.format {
            Format::Mbox => format!("mbox:{d}/mboxdir:INBOX={d}/mbox:INDEX={d}/index"),
            Format::Maildir => format!("maildir:{d}/Maildir:INDEX={d}/index"),
        };
        let conf = format!(
            "base_dir = {d}/base\nlog_path = {d}/dovecot.log\nssl = no\n\
             mail_location = {location}\nprotocols = pop3\n\
             pop3_uidl_format = %08Xu%08Xv\nmbox_write_locks = fcntl\n\
             mail_uid = {}\nmail_gid = {}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n",
            self.env.uid, self.env.gid
        );
        let p = self.dir.join("dovecot.conf");
        fs::write(&p, conf)?;
        gen::chown(&p, self.owner())
    }

    /// Delivers messages `first..first+n` of the corpus to the copy, as an MDA would.
    pub fn deliver(&self, corpus: Corpus, first: u64, n: u64) -> io::Result<Vec<u64>> {
        let mut sizes = Vec::new();
        let msgs: Vec<Message> = (first..first + n)
            .map(|i| gen::message(corpus, i))
            .collect();
        match self.format {
            Format::Mbox => {
                let mut f = OpenOptions::new().append(true).open(self.mailbox())?;
                let mut buf = Vec::new();
                for m in &msgs {
                    m.write_mbox(&mut buf)?;
                    sizes.push(m.canonical_size());
                }
                f.write_all(&buf)?;
            }
            Format::Maildir => {
                for m in &msgs {
                    let tmp = self.mailbox().join("tmp").join(m.maildir_name());
                    fs::write(&tmp, &m.text)?;
                    gen::chown(&tmp, self.owner())?;
                    fs::rename(&tmp, self.mailbox().join("new").join(m.maildir_name()))?;
                    sizes.push(m.canonical_size());
                }
            }
        }
        Ok(sizes)
    }

    fn launch(&self) -> io::Result<Launch> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))?;
        let home = self.dir.join("home").display().to_string();
        let env = vec![
            ("USER".into(), self.env.user.clone()),
            ("HOME".into(), home),
        ];
        let (program, args) = match self.server {
            Server::PopServe => {
                let spec = match self.format {
                    Format::Mbox => format!("mbox:{}", self.mailbox().display()),
                    Format::Maildir => format!("maildir:{}", self.mailbox().display()),
                };
                (
                    self.env.pop_serve.clone(),
                    vec![
                        "--log".into(),
                        "none".into(),
                        "--state-dir".into(),
                        self.dir.join("state").display().to_string(),
                        "--no-dotlock-helper".into(),
                        spec,
                    ],
                )
            }
            Server::Dovecot => (
                self.env.dovecot.clone(),
                vec![
                    "-c".into(),
                    self.dir.join("dovecot.conf").display().to_string(),
                ],
            ),
        };
        Ok(Launch {
            program,
            args,
            env,
            drop_to: self.env.drop_to,
            stderr,
        })
    }

    /// Runs one session; pop-serve's greeting is expected before the script's replies.
    pub fn session(&self, script: &Script) -> io::Result<Outcome> {
        let mut full = Script::default();
        if self.server == Server::PopServe {
            full.expect.push(client::Reply::Line);
        }
        full.send.extend_from_slice(&script.send);
        full.expect.extend_from_slice(&script.expect);
        client::run(&self.launch()?, &full)
    }
}
