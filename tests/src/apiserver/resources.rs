//! The resources this server knows, in one table, so routing, discovery, storage and the
//! `kind`/`apiVersion` stamped on objects all agree. A resource missing here is a 404 everywhere,
//! like on a real cluster without that API.

/// One REST resource (a group/version/plural), as discovery describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group, "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// URL path segment, e.g. "services".
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `{plural}/{name}/status` exists.
    pub status_subresource: bool,
    /// Whether PUT on a missing object creates it (as the real registry does for leases and
    /// events); otherwise it is a 404.
    pub create_on_update: bool,
}

/// The verbs served on every resource (no `deletecollection`: a DELETE on a collection is a 405).
pub const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

/// The verbs served on a `status` subresource.
pub const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// A v1 resource as most are: namespaced, without short names, categories or a status
/// subresource, and a PUT of a missing object is a 404. The table says only where one differs.
const fn v1(group: &'static str, plural: &'static str, kind: &'static str) -> Resource {
    Resource {
        group,
        version: "v1",
        plural,
        kind,
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    }
}

impl Resource {
    const fn cluster_scoped(self) -> Self {
        Self {
            namespaced: false,
            ..self
        }
    }

    const fn short_names(self, short_names: &'static [&'static str]) -> Self {
        Self { short_names, ..self }
    }

    /// In category `all` (`kubectl get all`).
    const fn in_all(self) -> Self {
        Self {
            categories: &["all"],
            ..self
        }
    }

    const fn with_status(self) -> Self {
        Self {
            status_subresource: true,
            ..self
        }
    }

    const fn created_on_update(self) -> Self {
        Self {
            create_on_update: true,
            ..self
        }
    }
}

const RBAC: &str = "rbac.authorization.k8s.io";

pub static RESOURCES: &[Resource] = &[
    v1("", "services", "Service")
        .short_names(&["svc"])
        .in_all()
        .with_status(),
    v1("", "nodes", "Node").cluster_scoped().short_names(&["no"]),
    v1("", "events", "Event").short_names(&["ev"]).created_on_update(),
    v1("", "namespaces", "Namespace")
        .cluster_scoped()
        .short_names(&["ns"])
        .with_status(),
    v1("", "serviceaccounts", "ServiceAccount").short_names(&["sa"]),
    v1("", "configmaps", "ConfigMap").short_names(&["cm"]),
    v1("", "secrets", "Secret"),
    v1("apps", "deployments", "Deployment")
        .short_names(&["deploy"])
        .in_all()
        .with_status(),
    v1(RBAC, "clusterroles", "ClusterRole").cluster_scoped(),
    v1(RBAC, "clusterrolebindings", "ClusterRoleBinding").cluster_scoped(),
    v1(RBAC, "roles", "Role"),
    v1(RBAC, "rolebindings", "RoleBinding"),
    v1("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    v1("coordination.k8s.io", "leases", "Lease").created_on_update(),
    v1("events.k8s.io", "events", "Event")
        .short_names(&["ev"])
        .created_on_update(),
];

/// Index into [`RESOURCES`]; what the store keys objects by.
pub type ResId = usize;

impl Resource {
    pub fn get(id: ResId) -> &'static Resource {
        &RESOURCES[id]
    }

    /// `singularName` in discovery: the kind in lower case, as the API server derives it.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// `apiVersion` as written in objects: "v1" or "group/v1".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "services" or "leases.coordination.k8s.io", as real error messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The resource served at group/version/plural.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource an object with this `apiVersion` and `kind` belongs to.
pub fn by_kind(api_version: &str, kind: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

/// The API groups a server serves unless told otherwise: the core group and those the generator
/// reads and writes. Others in the table (what the cluster bundle installs) are enabled per server
/// (`ApiServer::start_with_groups`), as kube-apiserver's `--runtime-config` enables groups; a group
/// not enabled is a 404 everywhere, like on a cluster that lacks it.
pub const DEFAULT_GROUPS: &[&str] = &["", "discovery.k8s.io", "coordination.k8s.io", "events.k8s.io"];

/// The groups other than core, in table order, each once.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}
