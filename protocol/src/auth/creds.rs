//! The `.creds` file: a user JWT and its nkey seed, in the layout nats-server's tools write and
//! every NATS client reads (nats-py `user_credentials=`, async-nats
//! `ConnectOptions::credentials_file`, the nats CLI `--creds`).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredsError {
    #[error("no user JWT in the credentials file")]
    NoJwt,
    #[error("no user nkey seed in the credentials file")]
    NoSeed,
}

/// The text of a `.creds` file.
pub fn render(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT of a `.creds` file.
pub fn jwt(text: &str) -> Result<&str, CredsError> {
    section(text, "NATS USER JWT").ok_or(CredsError::NoJwt)
}

/// The nkey seed of a `.creds` file.
pub fn seed(text: &str) -> Result<&str, CredsError> {
    section(text, "USER NKEY SEED").ok_or(CredsError::NoSeed)
}

fn section<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("-----BEGIN") && l.contains(label))?;
    lines.next().filter(|l| !l.is_empty() && !l.starts_with("---"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_file_reads_back() {
        let text = render("eyJ.abc.def", "SUAXYZ");
        assert_eq!(jwt(&text), Ok("eyJ.abc.def"));
        assert_eq!(seed(&text), Ok("SUAXYZ"));
        assert_eq!(jwt("garbage"), Err(CredsError::NoJwt));
    }
}
