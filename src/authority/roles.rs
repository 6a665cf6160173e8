//! Who may call what. Two roles: **operators** mint and revoke; **sidecars** watch bundles and
//! revocations and report checkpoints (operators may watch too). Every other caller is refused
//! with `UNAUTHENTICATED` or `PERMISSION_DENIED`, and the refusal is logged with the peer.
//!
//! A caller's role comes from the listener it reached ([`Gate`]):
//! - the operator socket `authority.sock`: the peer's uid (SO_PEERCRED) must be the Authority's
//!   own — then it is an operator;
//! - the TCP port without client certificates: every caller is a sidecar;
//! - the TCP port with mutual TLS (`client_ca`): the client certificate names the role in its
//!   subject's organizational unit (`OU=operator` or `OU=sidecar`) and the caller's name in its
//!   common name (`CN=host-b`). A certificate with no or another OU is refused.
//!
//! `grpc.health.v1` and server reflection are not gated: they reveal nothing secret.

use std::fmt;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::log_throttle::{self, Throttle};

/// The `OU` of an operator's client certificate.
pub const OPERATOR_OU: &str = "operator";
/// The `OU` of a Sidecar's client certificate.
pub const SIDECAR_OU: &str = "sidecar";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Sidecar,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Operator => OPERATOR_OU,
            Self::Sidecar => SIDECAR_OU,
        }
    }

    fn from_ou(ou: &str) -> Option<Self> {
        match ou {
            OPERATOR_OU => Some(Self::Operator),
            SIDECAR_OU => Some(Self::Sidecar),
            _ => None,
        }
    }
}

/// An admitted caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The certificate's common name (mutual TLS only).
    pub name: Option<String>,
    /// The peer, for logs: `ip:port`, or `uid N` on the socket.
    pub peer: String,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {name:?} at {}", self.role.name(), self.peer),
            None => write!(f, "{} at {}", self.role.name(), self.peer),
        }
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Mint, revoke.
    Operator,
    /// Watch bundles and revocations: sidecars and operators.
    Watcher,
    /// Report checkpoints: sidecars only.
    Sidecar,
}

impl Need {
    fn admits(self, role: Role) -> bool {
        match self {
            Self::Operator => role == Role::Operator,
            Self::Watcher => true,
            Self::Sidecar => role == Role::Sidecar,
        }
    }
}

/// How callers of one listener are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The operator socket: the peer's uid must be `uid` (the Authority's own).
    OperatorSocket { uid: u32 },
    /// TCP without client certificates: sidecars.
    OpenTcp,
    /// TCP with mutual TLS: the client certificate names the role.
    MutualTls,
}

impl Gate {
    /// Admit the caller of `request` to a method `method` that needs `need`, or refuse (logged).
    pub fn admit<T>(
        self,
        request: &Request<T>,
        method: &str,
        need: Need,
    ) -> Result<Caller, Status> {
        let caller = self.identify(request).inspect_err(|status| {
            tracing::warn!(
                method,
                peer = %peer_of(request),
                code = ?status.code(),
                "refused: {}",
                status.message()
            );
        })?;
        if need.admits(caller.role) {
            return Ok(caller);
        }
        let message = match need {
            Need::Operator => format!(
                "{method} is for operators; this caller is a {} ({caller})",
                caller.role.name()
            ),
            Need::Sidecar => format!(
                "{method} is for sidecars; this caller is an {} ({caller})",
                caller.role.name()
            ),
            Need::Watcher => unreachable!("every role may watch"),
        };
        static REFUSED: Throttle = Throttle::new(log_throttle::WINDOW);
        // Per method, role and host (not port: a new connection must not make a new key).
        let host = caller
            .peer
            .parse::<std::net::SocketAddr>()
            .map_or_else(|_| caller.peer.clone(), |addr| addr.ip().to_string());
        let key = format!("{method} {} {host}", caller.role.name());
        if let Some(left_out) = REFUSED.admit(&key) {
            tracing::warn!(method, peer = %caller.peer, role = caller.role.name(), left_out, "refused: {message}");
        }
        Err(Status::permission_denied(message))
    }

    fn identify<T>(self, request: &Request<T>) -> Result<Caller, Status> {
        let peer = peer_of(request);
        match self {
            Self::OperatorSocket { uid } => {
                let cred = request
                    .extensions()
                    .get::<UdsConnectInfo>()
                    .and_then(|info| info.peer_cred)
                    .ok_or_else(|| {
                        Status::unauthenticated(
                            "the operator socket could not read the peer's credentials",
                        )
                    })?;
                if cred.uid() != uid {
                    return Err(Status::permission_denied(format!(
                        "peer uid {} (pid {}) is not the Authority's uid {uid}; only the \
                         Authority's own user may mint and revoke over authority.sock",
                        cred.uid(),
                        cred.pid().map_or_else(|| "?".into(), |p| p.to_string())
                    )));
                }
                Ok(Caller {
                    role: Role::Operator,
                    name: None,
                    peer,
                })
            }
            Self::OpenTcp => Ok(Caller {
                role: Role::Sidecar,
                name: None,
                peer,
            }),
            Self::MutualTls => {
                let certs = request.peer_certs().ok_or_else(|| {
                    Status::unauthenticated(
                        "no client certificate: this Authority authenticates callers by mutual \
                         TLS (a certificate from `firma authority cert issue`)",
                    )
                })?;
                let leaf = certs.first().ok_or_else(|| {
                    Status::unauthenticated("the client sent an empty certificate chain")
                })?;
                let (role, name) = role_of_certificate(leaf.as_ref()).map_err(|why| {
                    Status::permission_denied(format!("client certificate {why}"))
                })?;
                Ok(Caller {
                    role,
                    name: Some(name),
                    peer,
                })
            }
        }
    }
}

/// The role (`OU`) and name (`CN`) a client certificate (DER) carries.
pub fn role_of_certificate(der: &[u8]) -> Result<(Role, String), String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|err| format!("does not parse: {err}"))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| format!("{subject} has no common name (CN=<name>)"))?
        .to_string();
    let units: Vec<&str> = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .collect();
    let roles: Vec<Role> = units.iter().filter_map(|ou| Role::from_ou(ou)).collect();
    match roles.as_slice() {
        [role] => Ok((*role, name)),
        [] => Err(format!(
            "{subject} names no firma role: its OU must be {OPERATOR_OU:?} or {SIDECAR_OU:?} \
             (found {units:?})"
        )),
        _ => Err(format!(
            "{subject} names more than one firma role ({units:?})"
        )),
    }
}

/// The peer of a request, for logs.
pub fn peer_of<T>(request: &Request<T>) -> String {
    let extensions = request.extensions();
    if let Some(addr) = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
    {
        return addr.to_string();
    }
    match extensions
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
    {
        Some(cred) => format!(
            "authority.sock (uid {}, pid {})",
            cred.uid(),
            cred.pid().map_or_else(|| "?".into(), |p| p.to_string())
        ),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in dn {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn role_and_name_come_from_ou_and_cn() {
        use rcgen::DnType::{CommonName, OrganizationalUnitName};
        let sidecar = cert(&[(CommonName, "host-b"), (OrganizationalUnitName, "sidecar")]);
        assert_eq!(
            role_of_certificate(&sidecar).unwrap(),
            (Role::Sidecar, "host-b".into())
        );
        let operator = cert(&[(CommonName, "alice"), (OrganizationalUnitName, "operator")]);
        assert_eq!(role_of_certificate(&operator).unwrap().0, Role::Operator);
        let none = cert(&[(CommonName, "x"), (OrganizationalUnitName, "admins")]);
        assert!(
            role_of_certificate(&none)
                .unwrap_err()
                .contains("no firma role")
        );
        let nameless = cert(&[(OrganizationalUnitName, "sidecar")]);
        assert!(
            role_of_certificate(&nameless)
                .unwrap_err()
                .contains("common name")
        );
        assert!(role_of_certificate(b"junk").is_err());
    }

    #[test]
    fn needs() {
        assert!(Need::Operator.admits(Role::Operator));
        assert!(!Need::Operator.admits(Role::Sidecar));
        assert!(Need::Watcher.admits(Role::Sidecar) && Need::Watcher.admits(Role::Operator));
        assert!(Need::Sidecar.admits(Role::Sidecar));
        assert!(!Need::Sidecar.admits(Role::Operator));
    }
}
