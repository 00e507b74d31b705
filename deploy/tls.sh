#!/usr/bin/env bash
# Makes a self-signed certificate authority and a server certificate it signs, for
# nats-server's TLS (deploy/nats-tls.conf):
#   deploy/tls.sh DIR [HOST...]   → DIR/ca.pem, DIR/ca-key.pem, DIR/server.pem, DIR/server-key.pem
# The server certificate names localhost, 127.0.0.1 and every HOST (DNS names or IPs). Clients
# trust DIR/ca.pem: helium-broker/helium-worker --tls-ca, Grid(..., tls_ca=), nats --tlsca.
# Keys are written 0600; the CA key signs nothing else, keep it offline in a real deployment.
set -euo pipefail
dir=${1:?usage: deploy/tls.sh DIR [HOST...]}; shift
mkdir -p "$dir"
umask 077
san="DNS:localhost,IP:127.0.0.1"
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+=",IP:$host"; else san+=",DNS:$host"; fi
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=Helium grid CA" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=helium-nats" -keyout "$dir/server-key.pem" -out "$dir/server.csr" 2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
  -days 825 -out "$dir/server.pem" \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$san") 2>/dev/null
rm -f "$dir/server.csr" "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir/server.pem"
echo "$dir/ca.pem"
