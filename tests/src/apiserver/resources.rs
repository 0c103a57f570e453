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
    pub singular: &'static str,
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

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        status_subresource: true,
        create_on_update: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status_subresource: false,
        create_on_update: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status_subresource: true,
        create_on_update: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        status_subresource: true,
        create_on_update: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: false,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status_subresource: false,
        create_on_update: true,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status_subresource: false,
        create_on_update: true,
    },
];

/// Index into [`RESOURCES`]; what the store keys objects by.
pub type ResId = usize;

impl Resource {
    pub fn get(id: ResId) -> &'static Resource {
        &RESOURCES[id]
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
