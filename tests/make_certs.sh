#!/usr/bin/env bash
# make_certs.sh OUTDIR - test certificates for the fake Cal ID API.
#
# Creates in OUTDIR:
#   ca.pem, ca.key                   test CA that the server under test trusts
#   server.pem, server.key           leaf for localhost and 127.0.0.1, signed by ca
#                                    (also what the server under test serves over HTTPS)
#   server-rsa.pem, server-rsa.key   the same names with an RSA 2048 key, whatever CALID_CERT_KEY says
#   guest.pem, guest.key             leaf for 10.0.2.2 (the host seen from a QEMU guest) and 127.0.0.1, signed by ca
#   wronghost.pem, wronghost.key     leaf for DNS:wrong.example only, signed by ca
#   untrusted.pem, untrusted.key     leaf for localhost and 127.0.0.1, signed by
#   untrusted-ca.pem                 a second CA that nobody is told to trust
#
# "localhost and 127.0.0.1" is DNS:localhost, IP:127.0.0.1 and also
# DNS:127.0.0.1: BearSSL's X.509 engine matches the server name against
# dNSName entries only and ignores iPAddress ones, so without the DNS form a
# BearSSL client told https://127.0.0.1:PORT fails with BR_ERR_X509_BAD_SERVER_NAME.
# OpenSSL-based clients (curl, Python) use the IP entry and ignore the DNS one.
#
# Every certificate is valid from one day ago to ten years ahead, so a small
# clock skew never matters. Keys are EC P-256 by default; CALID_CERT_KEY=rsa
# gives RSA 2048 instead (BearSSL handles both).
#
# Idempotent: does nothing when OUTDIR/ca.pem is newer than this script and
# every other file is present. Files are built in a private temporary
# directory and moved in place with ca.pem last, so a concurrent run never sees
# a half-made set. Quiet on success; on failure prints openssl's output.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
script=${BASH_SOURCE[0]}
files="ca.key server.pem server.key server-rsa.pem server-rsa.key guest.pem guest.key wronghost.pem wronghost.key untrusted.pem untrusted.key untrusted-ca.pem"

complete=1
for f in $files ca.pem; do
  [ -s "$out/$f" ] || complete=0
done
if [ "$complete" = 1 ] && [ "$out/ca.pem" -nt "$script" ]; then
  exit 0
fi

command -v openssl >/dev/null 2>&1 || { echo "$0: openssl not found (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d "$out/.make_certs.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/log

run() {
  if ! "$@" >>"$log" 2>&1; then
    echo "$0: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

case ${CALID_CERT_KEY:-ec} in
  rsa) newkey() { run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; } ;;
  ec)  newkey() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; } ;;
  *)   echo "$0: CALID_CERT_KEY must be ec or rsa" >&2; exit 2 ;;
esac

# GNU date; UTCTime form (YYMMDDHHMMSSZ) as openssl ca expects.
start=$(date -u -d '1 day ago' +%y%m%d%H%M%SZ)
end=$(date -u -d '10 years' +%y%m%d%H%M%SZ)

# The config reads the subjectAltName from the environment; it must always be set.
export CALID_SAN=DNS:unused

# One tiny CA directory per signing CA (openssl ca wants a database).
make_ca_dir() {
  mkdir -p "$1/newcerts"
  : >"$1/index.txt"
  # A random serial: two runs never issue the same issuer+serial pair.
  openssl rand -hex 8 | sed 's/^./1/' >"$1/serial"
  cat >"$1/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca

[ test_ca ]
dir              = $1
database         = \$dir/index.txt
new_certs_dir    = \$dir/newcerts
serial           = \$dir/serial
default_md       = sha256
policy           = policy_any
unique_subject   = no
email_in_dn      = no
copy_extensions  = none
preserve         = no

[ policy_any ]
organizationName = optional
commonName       = supplied

[ req ]
distinguished_name = req_dn
prompt             = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth
subjectAltName         = \${ENV::CALID_SAN}
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer
EOF
}

# new_ca DIR NAME: DIR/ca.key, DIR/ca.pem (self-signed).
new_ca() {
  make_ca_dir "$1"
  newkey "$1/ca.key"
  run openssl req -new -config "$1/ca.cnf" -key "$1/ca.key" \
      -subj "/O=calid-mcp tests/CN=$2" -out "$1/ca.csr"
  run openssl ca -batch -notext -config "$1/ca.cnf" -selfsign \
      -keyfile "$1/ca.key" -in "$1/ca.csr" -out "$1/ca.pem" \
      -extensions v3_ca -startdate "$start" -enddate "$end"
}

# new_leaf CADIR OUTBASE CN SAN [rsa]: OUTBASE.key, OUTBASE.pem signed by CADIR's CA.
new_leaf() {
  if [ "${5:-}" = rsa ]; then
    run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2.key"
  else
    newkey "$2.key"
  fi
  run openssl req -new -config "$1/ca.cnf" -key "$2.key" \
      -subj "/O=calid-mcp tests/CN=$3" -out "$2.csr"
  CALID_SAN=$4 run openssl ca -batch -notext -config "$1/ca.cnf" \
      -cert "$1/ca.pem" -keyfile "$1/ca.key" -in "$2.csr" -out "$2.pem" \
      -extensions v3_server -startdate "$start" -enddate "$end"
}

new_ca "$work/ca" "calid-mcp test CA"
new_ca "$work/other" "calid-mcp untrusted CA"
new_leaf "$work/ca" "$work/server" localhost "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1"
new_leaf "$work/ca" "$work/server-rsa" localhost "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1" rsa
# the host as a QEMU guest sees it, and as the test itself reaches the same server
new_leaf "$work/ca" "$work/guest" 10.0.2.2 "DNS:10.0.2.2,IP:10.0.2.2,IP:127.0.0.1,DNS:127.0.0.1"
new_leaf "$work/ca" "$work/wronghost" wrong.example "DNS:wrong.example"
new_leaf "$work/other" "$work/untrusted" localhost "DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1"

# Sanity: the good leaf verifies against the CA, the untrusted one does not.
run openssl verify -CAfile "$work/ca/ca.pem" "$work/server.pem" "$work/wronghost.pem"
if openssl verify -CAfile "$work/ca/ca.pem" "$work/untrusted.pem" >>"$log" 2>&1; then
  echo "$0: untrusted.pem unexpectedly verifies against ca.pem" >&2
  exit 1
fi

chmod 600 "$work"/*.key "$work"/ca/ca.key "$work"/other/ca.key
mv -f "$work/ca/ca.key" "$out/ca.key"
mv -f "$work/other/ca.pem" "$out/untrusted-ca.pem"
for f in server server-rsa guest wronghost untrusted; do
  mv -f "$work/$f.key" "$out/$f.key"
  mv -f "$work/$f.pem" "$out/$f.pem"
done
# Last: ca.pem is what the freshness check looks at.
mv -f "$work/ca/ca.pem" "$out/ca.pem"
