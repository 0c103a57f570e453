//! URL paths to what they name, using the real layout (`/api/v1/...` for the core group,
//! `/apis/{group}/{version}/...` otherwise, `namespaces/{ns}/` before a namespaced resource).
//! Anything that does not name something served is `None`, which the caller turns into a 404.

use super::resources::{self, ResId, Resource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(&'static str),
    /// `/api/v1` or `/apis/{group}/{version}`
    ResourceList {
        group: &'static str,
        version: &'static str,
    },
    /// A collection; `ns` is None for cluster-scoped resources and for "all namespaces".
    Collection {
        res: ResId,
        ns: Option<String>,
    },
    /// One object; `status` when the path ends in `/status`.
    Object {
        res: ResId,
        ns: Option<String>,
        name: String,
        status: bool,
    },
}

pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        ["healthz" | "livez" | "readyz"] => Some(Route::Health),
        ["api"] => Some(Route::CoreVersions),
        ["api", "v1", rest @ ..] => resource_path("", "v1", rest),
        ["apis"] => Some(Route::Groups),
        ["apis", group] => resources::groups().into_iter().find(|g| g == group).map(Route::Group),
        ["apis", group, version, rest @ ..] => {
            let known = resources::RESOURCES
                .iter()
                .find(|r| r.group == *group && r.version == *version)?;
            resource_path(known.group, known.version, rest)
        }
        _ => None,
    }
}

fn resource_path(group: &'static str, version: &'static str, rest: &[&str]) -> Option<Route> {
    let find = |plural: &str| resources::by_path(group, version, plural);
    let object = |res: ResId, ns: Option<String>, name: &str, sub: Option<&str>| {
        let status = match sub {
            None => false,
            Some("status") if Resource::get(res).status_subresource => true,
            Some(_) => return None,
        };
        Some(Route::Object {
            res,
            ns,
            name: name.to_string(),
            status,
        })
    };
    match rest {
        [] => Some(Route::ResourceList { group, version }),
        ["namespaces", ns, plural, tail @ ..] => {
            let res = find(plural).filter(|r| Resource::get(*r).namespaced)?;
            let ns = Some(ns.to_string());
            match tail {
                [] => Some(Route::Collection { res, ns }),
                [name] => object(res, ns, name, None),
                [name, sub] => object(res, ns, name, Some(sub)),
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let res = find(plural)?;
            let cluster = !Resource::get(res).namespaced;
            match tail {
                [] => Some(Route::Collection { res, ns: None }),
                [name] if cluster => object(res, None, name, None),
                [name, sub] if cluster => object(res, None, name, Some(sub)),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let svc = resources::by_path("", "v1", "services").unwrap();
        assert_eq!(
            parse("/api/v1/services"),
            Some(Route::Collection { res: svc, ns: None })
        );
        assert_eq!(
            parse("/api/v1/namespaces/a/services/b/status"),
            Some(Route::Object {
                res: svc,
                ns: Some("a".into()),
                name: "b".into(),
                status: true
            })
        );
        assert_eq!(parse("/api/v1/services/b"), None);
        assert_eq!(parse("/api/v1/nodes/n/status"), None);
        assert_eq!(parse("/apis/coordination.k8s.io/v1/leases").map(|_| ()), Some(()));
        assert_eq!(parse("/apis/batch/v1"), None);
        assert_eq!(parse("/apis/apps/v1").map(|_| ()), Some(()));
        assert_eq!(parse("/api/v1/services/"), None);
    }
}
