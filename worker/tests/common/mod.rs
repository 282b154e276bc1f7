//! What the worker's command-line tests share: running the binary as an operator does, and a
//! fresh database on the test Postgres.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use sqlx::postgres::PgPoolOptions;

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn worker(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate-worker"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

pub async fn fresh_database() -> String {
    let admin = std::env::var("CALLGATE_TEST_DATABASE_URL")
        .expect("CALLGATE_TEST_DATABASE_URL is not set: run the suite with deploy/local/test.sh");
    let name = format!("cg_{}", uuid::Uuid::new_v4().simple());
    let pool = PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}
