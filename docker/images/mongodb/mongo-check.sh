#!/usr/bin/env bash
# mongo-check.sh ping|primary [HOST] [PORT]: a MongoDB command over the wire protocol
# (OP_MSG) with bash's /dev/tcp, for an image without mongosh.
#   ping      exit 0 when the server answers {ping: 1} with ok: 1 (the health check)
#   primary   exit 0 when {hello: 1} names a replica set and this node is the writable
#             primary (the replica-set job; SecantusDB starts as the primary of its own
#             single-node set, nothing to initiate)
set -euo pipefail
what=${1:-ping}
host=${2:-127.0.0.1}
port=${3:-27017}
case "$what" in
  ping) cmd=ping ;;
  primary) cmd=hello ;;
  *) echo "usage: $0 ping|primary [host] [port]" >&2; exit 2 ;;
esac

le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }

# BSON {<cmd>: 1, $db: "admin"}
doc_len=$((4 + 1 + ${#cmd} + 1 + 4 + 1 + 4 + 4 + 6 + 1))
doc="$(le32 $doc_len)\\x10${cmd}\\x00$(le32 1)\\x02\$db\\x00$(le32 6)admin\\x00\\x00"
# header (length, request id, response to, opcode 2013 = OP_MSG), flag bits, section kind 0
msg_len=$((16 + 4 + 1 + doc_len))
msg="$(le32 $msg_len)$(le32 1)$(le32 0)$(le32 2013)$(le32 0)\\x00${doc}"

exec 3<>"/dev/tcp/$host/$port"
printf '%b' "$msg" >&3
# reply: its length first (dd reads exactly what it is asked for), then the rest
len_hex=$(timeout 5 dd bs=1 count=4 <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
[[ ${#len_hex} == 8 ]] || { echo "mongo-check: no reply from $host:$port" >&2; exit 1; }
len=$((16#${len_hex:6:2}${len_hex:4:2}${len_hex:2:2}${len_hex:0:2}))
reply=$(timeout 5 dd bs=1 count=$((len - 4)) <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
exec 3<&-

# ok: 1 (a double 1.0: 01 "ok" 00 00..f03f, or an int32 1: 10 "ok" 00 01000000)
[[ $reply == *"01$(hex ok)00000000000000f03f"* || $reply == *"10$(hex ok)0001000000"* ]] \
  || { echo "mongo-check: $cmd did not answer ok: 1" >&2; exit 1; }
if [[ $what == primary ]]; then
  # isWritablePrimary: true (08 name 00 01) and a setName string (02 name 00 ...)
  [[ $reply == *"08$(hex isWritablePrimary)0001"* ]] \
    || { echo "mongo-check: $host:$port is not a writable primary (yet)" >&2; exit 1; }
  [[ $reply == *"02$(hex setName)00"* ]] \
    || { echo "mongo-check: $host:$port is not a member of a replica set" >&2; exit 1; }
  rest=${reply#*"02$(hex setName)00"}
  n=$((16#${rest:6:2}${rest:4:2}${rest:2:2}${rest:0:2}))
  name=$(printf '%b' "$(printf '%s' "${rest:8:$(((n - 1) * 2))}" | sed 's/../\\x&/g')")
  echo "mongo-check: $host:$port is the writable primary of replica set '$name'"
fi
