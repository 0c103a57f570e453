# Shared by scripts/demo and scripts/test: install what is missing from Debian's packages.
# Sourced, not run.

need_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    return 1
  fi
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust_components() {
  command -v cargo >/dev/null || { echo "error: cargo is not installed (https://rustup.rs)" >&2; return 1; }
  if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  fi
}

# nginx with the stream module; nothing may auto-start (tests run private instances).
NGINX_PACKAGES=(nginx libnginx-mod-stream)
# BIND 9 for the DNS step: named, tsig-keygen, nsupdate, dig, named-checkzone.
BIND_PACKAGES=(bind9 bind9-dnsutils)
# HAProxy for LB hosts whose flavor is haproxy; tests and the demo run private instances.
HAPROXY_PACKAGES=(haproxy)
# Only the tests: network namespaces for IPv6 listeners and --manage-addresses (ip),
# systemd-analyze for the units; Git servers on loopback (sshd, and git http-backend behind nginx
# through fcgiwrap with a CA of the test's own from openssl).
TEST_PACKAGES=(iproute2 systemd git openssh-server openssh-client fcgiwrap openssl)
# Every build of the applier: it links MIT krb5's GSS-API for GSS-TSIG (docs/active-directory.md),
# and libgssapi-sys makes its bindings with bindgen (headers, pkg-config, libclang).
GSS_BUILD_PACKAGES=(libkrb5-dev libgssapi-krb5-2 pkg-config clang libclang-dev)
# Only the tests: a Samba AD domain controller on loopback (tests/tests/e2e/ad_dns.rs) and kinit/klist.
# samba-ad-provision holds the AD schema `samba-tool domain provision` reads: only recommended by
# samba, so --no-install-recommends leaves it out (a fresh machine failed every AD test without it).
AD_PACKAGES=(samba samba-ad-provision samba-dsdb-modules samba-vfs-modules winbind krb5-user)
# The release artifacts and their tests: scripts/image (buildah), the image run with podman (runc;
# skopeo to check the archive as a registry-less site copies it), scripts/package (dpkg-dev).
ARTIFACT_PACKAGES=(buildah podman runc skopeo ca-certificates binutils dpkg-dev)

# Debian's haproxy package enables haproxy.service. Where an install may start services (no
# policy-rc.d blocking it, as on a full system), stop and disable that instance so it holds no
# address or socket a test or the demo uses; the private instances need nothing from it.
quiet_system_haproxy() {
  if command -v systemctl >/dev/null && systemctl is-active --quiet haproxy 2>/dev/null; then
    echo "stopping the system haproxy.service (tests run private instances)"
    systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
}

# A full test build needs a few GB under target/; say so up front, since running out shows up
# later as a linker or test failure that names no cause.
report_free_disk() {
  local dir="$1" free_kb
  mkdir -p "$dir"
  free_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  echo "free disk under $dir: $((free_kb / 1024)) MB"
  if [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
    echo "warning: less than 6 GB free under $dir; the build, the release artifacts and the tests may run out of space" >&2
  fi
}
