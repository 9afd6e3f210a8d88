#!/bin/sh
# tests/upstream_test.sh - builds tests/upstream_harness.c and runs it against
# tests/upstream_tls_server.py with throw-away certificates: the unit tests,
# the network suite, then one run per failure that must be named correctly.
# Usage: sh tests/upstream_test.sh [CC]     (run from the repository root)
set -u
CC=${CC:-${1:-gcc}}
HERE=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /tmp/upstream_test.XXXXXX)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$D"; }
trap cleanup EXIT INT TERM

# ---- certificates: a CA, a server cert for DNS:localhost, an expired one, a foreign CA ----
gen() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/ca.key" -out "$D/ca.pem" \
        -days 30 -subj /CN=upstream-test-ca -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/other.key" -out "$D/other-ca.pem" \
        -days 30 -subj /CN=some-other-ca -addext basicConstraints=critical,CA:TRUE
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$D/ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/srv.key" -out "$D/srv.csr" -subj /CN=localhost
    openssl x509 -req -in "$D/srv.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial -out "$D/srv.pem" \
        -days 30 -extfile "$D/ext"
    # expired: openssl ca is the one 3.0 tool that takes explicit dates
    mkdir -p "$D/ca" && : > "$D/ca/index.txt" && echo 01 > "$D/ca/serial"
    cat > "$D/ca.cnf" <<EOF
[ca]
default_ca = d
[d]
dir = $D/ca
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
EOF
    openssl ca -batch -config "$D/ca.cnf" -cert "$D/ca.pem" -keyfile "$D/ca.key" -in "$D/srv.csr" -out "$D/expired.pem" \
        -startdate 20200101000000Z -enddate 20200201000000Z -extfile "$D/ext" -notext
    # the other signatures a real chain may carry: RSA 2048 (PKCS#1 v1.5, SHA-256) and
    # ECDSA P-384 with SHA-384, a CA and a leaf each
    for k in rsa p384; do
        case $k in rsa) kopt="-newkey rsa:2048" ;; *) kopt="-newkey ec -pkeyopt ec_paramgen_curve:P-384" ;; esac
        md=-sha256; [ $k = p384 ] && md=-sha384
        openssl req -x509 $kopt $md -nodes -keyout "$D/ca-$k.key" -out "$D/ca-$k.pem" -days 30 -subj "/CN=upstream-test-ca-$k" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req $kopt -nodes -keyout "$D/srv-$k.key" -out "$D/srv-$k.csr" -subj /CN=localhost
        openssl x509 -req $md -in "$D/srv-$k.csr" -CA "$D/ca-$k.pem" -CAkey "$D/ca-$k.key" -CAcreateserial \
            -out "$D/srv-$k.pem" -days 30 -extfile "$D/ext"
    done
}
gen > "$D/gen.log" 2>&1 || { cat "$D/gen.log"; echo "certificate generation failed"; exit 1; }

# ---- build (short timeouts so the timeout tests are quick) ----
FLAGS="-std=c11 -Wall -Wextra -Wpedantic -Werror -O2 -g -I$HERE"
if [ "${SANITIZE:-0}" = 1 ]; then # make test SANITIZE=1: the harness too
    CC=clang
    FLAGS="$FLAGS -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
fi
SHORT="-DCM_UPSTREAM_ANSWER_MS=2000 -DCM_UPSTREAM_HANDSHAKE_MS=1500 -DCM_UPSTREAM_CONNECT_MS=1500"
SHORT="$SHORT -DCM_UPSTREAM_WRITE_IDLE_MS=300"
$CC $FLAGS $SHORT "$HERE/tests/upstream_harness.c" "$HERE/port/posix.c" -lbearssl -lpthread -o "$D/h" || exit 1

# ---- servers (started in this shell, not in $(...), so that PIDS reaches the trap) ----
start() { # name, args...
    name=$1; shift
    python3 "$HERE/tests/upstream_tls_server.py" --port-file "$D/$name.port" "$@" > "$D/$name.log" 2>&1 &
    PIDS="$PIDS $!"
}
port_of() { # name: waits for the port file
    i=0; while [ ! -s "$D/$1.port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
    cat "$D/$1.port"
}
start main --cert "$D/srv.pem" --key "$D/srv.key"
start expired --cert "$D/expired.pem" --key "$D/srv.key"
start tls13 --cert "$D/srv.pem" --key "$D/srv.key" --tls13-only
start plain --plain
start stall --no-tls-stall
start full --backlog-full
start drop --cert "$D/srv.pem" --key "$D/srv.key" --drop-nth 2
start rsa --cert "$D/srv-rsa.pem" --key "$D/srv-rsa.key"
start p384 --cert "$D/srv-p384.pem" --key "$D/srv-p384.key"
start cbc --cert "$D/srv.pem" --key "$D/srv.key" --ciphers ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA
start rsakx --cert "$D/srv-rsa.pem" --key "$D/srv-rsa.key" --ciphers AES128-GCM-SHA256:AES256-GCM-SHA384
P=$(port_of main); PEXP=$(port_of expired); P13=$(port_of tls13)
PPLAIN=$(port_of plain); PSTALL=$(port_of stall); PFULL=$(port_of full); PDROP=$(port_of drop)
PRSA=$(port_of rsa); P384=$(port_of p384); PCBC=$(port_of cbc); PRSAKX=$(port_of rsakx)

fails=0
runs=0
HARNESS="$D/h"
run() { # description, args...
    desc=$1; shift
    runs=$((runs+1))
    echo "== $desc"
    out=$("$HARNESS" "$@" 2>&1); rc=$?
    echo "$out" | sed 's/^/  /' | grep -v '^  *$' | tail -n 40
    [ $rc -eq 0 ] || { echo "  ^^^ FAILED"; fails=$((fails+1)); }
}

: > "$D/empty.pem"
run "unit tests + network suite" "https://localhost:$P" "$D/ca.pem"
run "the server drops the 2nd request of each connection" "https://localhost:$PDROP" "$D/ca.pem" --drop-suite
run "untrusted CA" "https://localhost:$P" "$D/other-ca.pem" --expect-error \
    "TLS failure: the server certificate is not trusted (BearSSL error 62: BR_ERR_X509_NOT_TRUSTED)"
run "wrong host name" "https://127.0.0.1:$P" "$D/ca.pem" --expect-error \
    "TLS failure: the certificate does not match host name 127.0.0.1"
run "expired certificate" "https://localhost:$PEXP" "$D/ca.pem" --expect-error "BR_ERR_X509_EXPIRED"
# the client's TLS profile (calid_mcp.c, tls_profile): RSA and P-384 chains verify; a
# server with only CBC suites or only RSA key exchange finds no common suite
run "RSA 2048 chain, ECDHE_RSA" "https://localhost:$PRSA" "$D/ca-rsa.pem" --get /json
run "ECDSA P-384 chain, SHA-384" "https://localhost:$P384" "$D/ca-p384.pem" --get /json
run "server offers only CBC suites" "https://localhost:$PCBC" "$D/ca.pem" --expect-error "alert 40 (handshake_failure)"
run "server offers only RSA key exchange" "https://localhost:$PRSAKX" "$D/ca-rsa.pem" --expect-error \
    "alert 40 (handshake_failure)"
run "server refuses TLS 1.2" "https://localhost:$P13" "$D/ca.pem" --expect-error "alert 70 (protocol_version) from the server"
run "plain HTTP on the port" "https://localhost:$PPLAIN" "$D/ca.pem" --expect-error "TLS failure"
run "TCP but no TLS answer" "https://localhost:$PSTALL" "$D/ca.pem" --expect-error \
    "timed out during the TLS handshake with localhost:$PSTALL"
run "connect hangs" "https://127.0.0.1:$PFULL" "$D/ca.pem" --expect-error "timed out connecting to 127.0.0.1:$PFULL"
run "connection refused" "https://127.0.0.1:1" "$D/ca.pem" --expect-error "connection to 127.0.0.1:1 refused or failed"
run "unknown host" "https://no-such-host.invalid" "$D/ca.pem" --expect-error "could not resolve host no-such-host.invalid"
run "http:// refused" "http://localhost:$P" "$D/ca.pem" --expect-error "only https:// is allowed"
run "missing CA file" "https://localhost:$P" "$D/nope.pem" --expect-error "cannot open the CA file"
run "empty CA file" "https://localhost:$P" "$D/empty.pem" --expect-error "no certificate"

# small limits: the system bundle overflows them with a clear message
if $CC $FLAGS -DCM_TRUST_ARENA_BYTES=8192 "$HERE/tests/upstream_harness.c" "$HERE/port/posix.c" -lbearssl -lpthread \
    -o "$D/h_arena"; then
    HARNESS="$D/h_arena" run "8 KiB trust arena"
else runs=$((runs+1)); fails=$((fails+1)); fi
if $CC $FLAGS -DCM_MAX_TRUST_ANCHORS=10 "$HERE/tests/upstream_harness.c" "$HERE/port/posix.c" -lbearssl -lpthread \
    -o "$D/h_anchors"; then
    HARNESS="$D/h_anchors" run "10 trust anchors"
else runs=$((runs+1)); fails=$((fails+1)); fi

echo "upstream_test: $fails run(s) failed"
echo "$((runs - fails)) passed, $fails failed"
[ $fails -eq 0 ]
