//! The administration subcommands of the `fastim` binary: `admin`, `backup`, `restore`,
//! `check`.
//!
//! Each opens the database in `--data-dir` (never creating it), calls the store
//! ([`crate::store::admin`]; only the store touches SQLite), and prints plain aligned
//! text, or JSON with `--json`. They are safe while the server runs, except `restore`,
//! which refuses while the database is open elsewhere unless `--force` is given.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use serde::Serialize;
use serde_json::json;

use crate::api::{NICKNAME_MAX, check_mobile, check_new_password, check_nickname};
use crate::secret::hash_password;
use crate::store::admin::{self as store_admin, GroupInfo, UserInfo};
use crate::store::{Db, NewUser, StoreError, User};

/// The database file inside the data directory (as the server names it).
pub const DB_FILE: &str = "fastim.db";

/// A subcommand; without one the binary runs the server.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Administer users, groups and sessions (safe while the server runs).
    Admin {
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        /// What to administer.
        #[command(subcommand)]
        what: Admin,
    },
    /// Write a consistent copy of the database to FILE (safe while the server runs).
    Backup {
        /// Where to write the copy (replaced atomically if it exists).
        file: PathBuf,
    },
    /// Put the backup FILE in place of the database (stop the server first).
    Restore {
        /// A file written by `fastim backup`.
        file: PathBuf,
        /// Restore even if the database seems to be in use.
        #[arg(long)]
        force: bool,
    },
    /// Check the database: PRAGMA integrity_check, the conversation index and the schema version.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `fastim admin …`.
#[derive(Subcommand, Debug)]
pub enum Admin {
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
    /// Groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Login sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Counts of users, groups, messages, sessions, and the database size.
    Stats,
}

/// `fastim admin user …`.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Every user.
    List,
    /// One user, by id or mobile number.
    Show {
        /// Id or mobile number.
        user: String,
    },
    /// Create a user; the password is read from the first line of standard input.
    Add {
        /// Mobile number (the login name).
        mobile: String,
        /// Display name.
        #[arg(long)]
        nickname: String,
        /// Read the password from standard input (the default; accepted for scripts
        /// that say so).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password, read from the first line of standard input; ends the
    /// user's sessions.
    Passwd {
        /// Id or mobile number.
        user: String,
    },
    /// Delete a user with their sessions, friendships, memberships and messages.
    Delete {
        /// Id or mobile number.
        user: String,
    },
    /// Block a user: no login, no sending, every session ended.
    Block {
        /// Id or mobile number.
        user: String,
    },
    /// Unblock a user.
    Unblock {
        /// Id or mobile number.
        user: String,
    },
}

/// `fastim admin group …`.
#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Every group.
    List,
    /// One group and its members.
    Show {
        /// Group id.
        id: i64,
    },
    /// Delete a group with its memberships and messages.
    Delete {
        /// Group id.
        id: i64,
    },
}

/// `fastim admin session …`.
#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// A user's sessions that have not expired: their ids and expiry.
    List {
        /// Id or mobile number.
        user: String,
    },
    /// End the sessions of one user (or only the one --session names), or of everyone
    /// with --all. A running server closes their chat sockets within seconds.
    Revoke {
        /// Id or mobile number.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        user: Option<String>,
        /// End every session of every user.
        #[arg(long)]
        all: bool,
        /// End only this session of the user (an id from `session list`).
        #[arg(long, conflicts_with = "all")]
        session: Option<String>,
    },
}

/// Why a command failed: a sentence for the operator.
pub type Failure = String;

/// Runs `cmd` against the database in `data_dir`, printing to `out`; the password of
/// `user add` and `passwd` is read from `input`.
///
/// # Errors
/// A sentence saying what went wrong (the caller prints it and exits non-zero).
pub fn run(
    cmd: Command,
    data_dir: &Path,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let path = data_dir.join(DB_FILE);
    match cmd {
        Command::Admin { json, what } => {
            let mut db = open(&path)?;
            admin(&mut db, what, json, input, out)
        }
        Command::Backup { file } => backup(&path, &file, out),
        Command::Restore { file, force } => restore(data_dir, &path, &file, force, out),
        Command::Check { json } => check(&path, json, out),
    }
}

fn missing(path: &Path) -> Failure {
    format!(
        "no database at {} (set --data-dir to the server's data directory)",
        path.display()
    )
}

fn open(path: &Path) -> Result<Db, Failure> {
    if !path.is_file() {
        return Err(missing(path));
    }
    Db::open_existing(path).map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn db_err(e: StoreError) -> Failure {
    e.to_string()
}

fn io_err(e: std::io::Error) -> Failure {
    format!("cannot write the output: {e}")
}

/// The user named by `key` (mobile number or id), or the sentence that says none is.
fn find(db: &Db, key: &str) -> Result<User, Failure> {
    if let Some(user) = store_admin::find_user(db, key).map_err(db_err)? {
        return Ok(user);
    }
    let key = key.trim();
    let digits = key.strip_prefix('+').unwrap_or(key);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    Err(if numeric && (key.starts_with('+') || digits.len() >= 5) {
        format!("no user with mobile {key}")
    } else if numeric {
        format!("no user with id {key}")
    } else {
        format!("no user with mobile or id {key:?}")
    })
}

/// The first line of `input`, without its line ending.
fn read_password(input: &mut dyn BufRead) -> Result<String, Failure> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading the password from standard input (one line)");
    }
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let p = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    Ok(p.to_owned())
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    writeln!(out, "{text}").map_err(io_err)
}

fn admin(
    db: &mut Db,
    what: Admin,
    json: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let now = now_ms();
    match what {
        Admin::User(cmd) => user(db, cmd, json, now, input, out),
        Admin::Group(cmd) => group(db, cmd, json, out),
        Admin::Session(SessionCmd::List { user }) => {
            let u = find(db, &user)?;
            let sessions = db.sessions_of(u.id, now).map_err(db_err)?;
            if json {
                return print_json(out, &sessions);
            }
            let mut t = vec![["session".to_owned(), "expires (UTC)".to_owned()]];
            t.extend(sessions.iter().map(|s| [s.id.clone(), time(s.expires_at)]));
            table(out, &t)
        }
        Admin::Session(SessionCmd::Revoke {
            user: Some(key),
            session: Some(session),
            ..
        }) => {
            let u = find(db, &key)?;
            if !db.revoke_session(u.id, &session).map_err(db_err)? {
                return Err(format!(
                    "user {} ({}) has no session {session:?} (see `fastim admin session list`)",
                    u.id, u.mobile
                ));
            }
            if json {
                print_json(out, &json!({ "revoked": 1 }))
            } else {
                writeln!(out, "revoked session {session} of {}", u.mobile).map_err(io_err)
            }
        }
        Admin::Session(SessionCmd::Revoke { user, all, .. }) => {
            let (n, whom) = match user {
                Some(key) if !all => {
                    let u = find(db, &key)?;
                    (db.revoke_sessions(u.id).map_err(db_err)?, u.mobile)
                }
                _ => (
                    db.revoke_all_sessions().map_err(db_err)?,
                    "every user".to_owned(),
                ),
            };
            if json {
                print_json(out, &json!({ "revoked": n }))
            } else {
                writeln!(out, "revoked {n} sessions of {whom}").map_err(io_err)
            }
        }
        Admin::Stats => {
            let s = db.stats(now).map_err(db_err)?;
            if json {
                return print_json(out, &s);
            }
            rows(
                out,
                &[
                    ["users", &s.users.to_string()],
                    ["blocked users", &s.blocked_users.to_string()],
                    ["groups", &s.groups.to_string()],
                    ["messages", &s.messages.to_string()],
                    ["sessions", &s.sessions.to_string()],
                    ["database bytes", &s.database_bytes.to_string()],
                    ["schema version", &s.schema_version.to_string()],
                ],
            )
        }
    }
}

fn user(
    db: &mut Db,
    cmd: UserCmd,
    json: bool,
    now: i64,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let done = |out: &mut dyn Write, v: serde_json::Value, text: String| {
        if json {
            print_json(out, &v)
        } else {
            writeln!(out, "{text}").map_err(io_err)
        }
    };
    match cmd {
        UserCmd::List => {
            let users = db.list_users(now).map_err(db_err)?;
            if json {
                return print_json(out, &users);
            }
            user_table(out, &users)
        }
        UserCmd::Show { user } => {
            let u = find(db, &user)?;
            let info = db
                .user_info(u.id, now)
                .map_err(db_err)?
                .ok_or_else(|| format!("no user with id {}", u.id))?;
            if json {
                return print_json(out, &info);
            }
            user_details(out, &info)
        }
        UserCmd::Add {
            mobile, nickname, ..
        } => {
            let mobile = check_mobile(&mobile)?.to_owned();
            let nickname = check_nickname(&nickname, NICKNAME_MAX)?.to_owned();
            let password = read_password(input)?;
            check_new_password(&password, &mobile)?;
            let new = NewUser {
                mobile,
                password_hash: hash_password(&password),
                nickname,
                avatar: String::new(),
                sex: "U".to_owned(),
                memo: String::new(),
            };
            let u = db.create_user(new, now).map_err(db_err)?;
            done(
                out,
                json!({ "id": u.id, "mobile": u.mobile }),
                format!("added user {} ({})", u.id, u.mobile),
            )
        }
        UserCmd::Passwd { user } => {
            let u = find(db, &user)?;
            let password = read_password(input)?;
            check_new_password(&password, &u.mobile)?;
            let n = db
                .set_password(u.id, &hash_password(&password))
                .map_err(db_err)?;
            done(
                out,
                json!({ "id": u.id, "revoked": n }),
                format!(
                    "changed the password of user {} ({}); revoked {n} sessions",
                    u.id, u.mobile
                ),
            )
        }
        UserCmd::Delete { user } => {
            let u = find(db, &user)?;
            let d = db.delete_user(u.id).map_err(db_err)?;
            if json {
                return print_json(out, &json!({ "id": u.id, "deleted": d }));
            }
            writeln!(
                out,
                "deleted user {} ({}): {} sessions, {} friendships, {} memberships, {} messages",
                u.id, u.mobile, d.sessions, d.friendships, d.memberships, d.messages
            )
            .map_err(io_err)?;
            for (g, owner) in &d.groups_transferred {
                writeln!(out, "group {g} now owned by user {owner}").map_err(io_err)?;
            }
            for g in &d.groups_deleted {
                writeln!(out, "group {g} deleted (no member left)").map_err(io_err)?;
            }
            Ok(())
        }
        UserCmd::Block { user } => {
            let u = find(db, &user)?;
            let n = db.set_blocked(u.id, true).map_err(db_err)?;
            done(
                out,
                json!({ "id": u.id, "blocked": true, "revoked": n }),
                format!("blocked user {} ({}); revoked {n} sessions", u.id, u.mobile),
            )
        }
        UserCmd::Unblock { user } => {
            let u = find(db, &user)?;
            db.set_blocked(u.id, false).map_err(db_err)?;
            done(
                out,
                json!({ "id": u.id, "blocked": false }),
                format!("unblocked user {} ({})", u.id, u.mobile),
            )
        }
    }
}

fn group(db: &mut Db, cmd: GroupCmd, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    match cmd {
        GroupCmd::List => {
            let groups = db.list_groups().map_err(db_err)?;
            if json {
                return print_json(out, &groups);
            }
            group_table(out, &groups)
        }
        GroupCmd::Show { id } => {
            let info = db
                .group_info(id)
                .map_err(db_err)?
                .ok_or_else(|| format!("no group with id {id}"))?;
            let members = db.members(id).map_err(db_err)?;
            if json {
                return print_json(out, &json!({ "group": info, "members": members }));
            }
            let g = &info.group;
            rows(
                out,
                &[
                    ["id", &g.id.to_string()],
                    ["name", &g.name],
                    ["owner", &g.owner_id.to_string()],
                    ["category", &g.cate.to_string()],
                    ["memo", &g.memo],
                    ["created", &time(g.created_at)],
                    ["members", &info.members.to_string()],
                    ["messages", &info.messages.to_string()],
                ],
            )?;
            writeln!(out).map_err(io_err)?;
            let mut t = vec![[
                "USER".to_owned(),
                "MOBILE".to_owned(),
                "NICKNAME".to_owned(),
                "ROLE".to_owned(),
                "JOINED".to_owned(),
            ]];
            for m in &members {
                t.push([
                    m.user.id.to_string(),
                    m.user.mobile.clone(),
                    m.user.nickname.clone(),
                    format!("{:?}", m.role).to_lowercase(),
                    time(m.joined_at),
                ]);
            }
            table(out, &t)
        }
        GroupCmd::Delete { id } => {
            let n = db.delete_group(id).map_err(|e| match e {
                StoreError::NoSuchGroup => format!("no group with id {id}"),
                other => other.to_string(),
            })?;
            if json {
                print_json(out, &json!({ "id": id, "messages": n }))
            } else {
                writeln!(out, "deleted group {id} and its {n} messages").map_err(io_err)
            }
        }
    }
}

fn user_table(out: &mut dyn Write, users: &[UserInfo]) -> Result<(), Failure> {
    let mut t = vec![
        [
            "ID", "MOBILE", "NICKNAME", "BLOCKED", "FRIENDS", "GROUPS", "SESSIONS", "SENT",
            "CREATED",
        ]
        .map(str::to_owned),
    ];
    for u in users {
        t.push([
            u.user.id.to_string(),
            u.user.mobile.clone(),
            u.user.nickname.clone(),
            if u.blocked { "yes" } else { "no" }.to_owned(),
            u.friends.to_string(),
            u.groups.to_string(),
            u.sessions.to_string(),
            u.messages_sent.to_string(),
            time(u.user.created_at),
        ]);
    }
    table(out, &t)
}

fn user_details(out: &mut dyn Write, u: &UserInfo) -> Result<(), Failure> {
    rows(
        out,
        &[
            ["id", &u.user.id.to_string()],
            ["mobile", &u.user.mobile],
            ["nickname", &u.user.nickname],
            ["sex", &u.user.sex],
            ["memo", &u.user.memo],
            ["created", &time(u.user.created_at)],
            ["blocked", if u.blocked { "yes" } else { "no" }],
            ["friends", &u.friends.to_string()],
            ["groups", &u.groups.to_string()],
            ["sessions", &u.sessions.to_string()],
            ["messages sent", &u.messages_sent.to_string()],
        ],
    )
}

fn group_table(out: &mut dyn Write, groups: &[GroupInfo]) -> Result<(), Failure> {
    let mut t = vec![["ID", "NAME", "OWNER", "MEMBERS", "MESSAGES", "CREATED"].map(str::to_owned)];
    for g in groups {
        t.push([
            g.group.id.to_string(),
            g.group.name.clone(),
            g.group.owner_id.to_string(),
            g.members.to_string(),
            g.messages.to_string(),
            time(g.group.created_at),
        ]);
    }
    table(out, &t)
}

/// Prints `rows` in columns padded to their widest cell (in characters).
fn table<const N: usize>(out: &mut dyn Write, rows: &[[String; N]]) -> Result<(), Failure> {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(io_err)?;
    }
    Ok(())
}

/// Prints `label: value` pairs with the values aligned.
fn rows(out: &mut dyn Write, pairs: &[[&str; 2]]) -> Result<(), Failure> {
    let t: Vec<[String; 2]> = pairs
        .iter()
        .map(|[k, v]| [format!("{k}:"), (*v).to_owned()])
        .collect();
    table(out, &t)
}

/// A unix time in milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn backup(path: &Path, file: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let db = open(path)?;
    let same = match (path.canonicalize(), file.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(format!(
            "{} is the live database: back up to another file",
            file.display()
        ));
    }
    db.backup_to(file)
        .map_err(|e| format!("backup to {} failed: {e}", file.display()))?;
    writeln!(out, "backed up {} to {}", path.display(), file.display()).map_err(io_err)
}

fn restore(
    data_dir: &Path,
    path: &Path,
    file: &Path,
    force: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if !file.is_file() {
        return Err(format!("no backup file at {}", file.display()));
    }
    if path.is_file() && !force {
        let busy = store_admin::in_use(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if busy {
            return Err(format!(
                "{} is in use: the server seems to be running; stop it first (or pass --force)",
                path.display()
            ));
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let kept = store_admin::restore(file, path)
        .map_err(|e| format!("restore from {} failed: {e}", file.display()))?;
    writeln!(out, "restored {} from {}", path.display(), file.display()).map_err(io_err)?;
    if kept {
        writeln!(
            out,
            "the previous database is kept as {}.pre-restore",
            path.display()
        )
        .map_err(io_err)?;
    }
    Ok(())
}

fn check(path: &Path, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    if !path.is_file() {
        return Err(missing(path));
    }
    let report =
        store_admin::check(path).map_err(|e| format!("{} is damaged: {e}", path.display()))?;
    if json {
        print_json(out, &json!({ "ok": report.ok(), "report": report }))?;
    } else {
        writeln!(out, "database: {}", path.display()).map_err(io_err)?;
        writeln!(
            out,
            "schema version: {} (this build knows {})",
            report.schema_version, report.known_version
        )
        .map_err(io_err)?;
        for line in &report.integrity {
            writeln!(out, "integrity: {line}").map_err(io_err)?;
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err(format!("{}: check failed", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn tables_align_on_characters() {
        let mut out = Vec::new();
        table(
            &mut out,
            &[
                ["ID".to_owned(), "NAME".to_owned(), "X".to_owned()],
                ["10".to_owned(), "张三".to_owned(), "y".to_owned()],
            ],
        )
        .expect("table");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "ID  NAME  X\n10  张三    y\n"
        );
    }
}
