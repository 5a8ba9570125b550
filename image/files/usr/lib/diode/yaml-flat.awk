# yaml-flat.awk: flattens the block-style YAML subset that Raspberry Pi Imager
# and cloud-init NoCloud examples use into one "path<TAB>value" line per
# scalar, e.g.
#   users/1/name	pi
#   network/wifis/wlan0/access-points/My%20Net/password	secret
# Path components are the mapping keys (with "%", "/", tab and space
# percent-encoded) and 1-based sequence indexes. Supported: block mappings and
# sequences (also "- key: value" items and sequences at the parent key's
# indentation), plain/'single'/"double" quoted scalars, comments, flow
# sequences of plain scalars ([a, b]), and | / > block scalars (kept with "\n"
# for line breaks). Anchors, aliases, tags, flow mappings and multi-document
# streams are not: a line it cannot read is printed to stderr as
# "yaml:LINE: reason" and the parse goes on (the caller reports it).
# Usage: awk -f yaml-flat.awk FILE

function enc(k) {
  gsub(/%/, "%25", k); gsub(/\//, "%2F", k); gsub(/\t/, "%09", k); gsub(/ /, "%20", k)
  return k
}
function bad(msg) { printf "yaml:%d: %s\n", NR, msg > "/dev/stderr"; errors++ }
function emit(p, v) {
  gsub(/\t/, " ", v)
  print p "\t" v
}
function join(p, k) { return p == "" ? k : p "/" k }
function rtrim(s) { sub(/[ \t]+$/, "", s); return s }

# Parses a scalar (quoted or plain) at the start of s; sets SCALAR and REST.
function scalar(s,   q, i, c, out) {
  q = substr(s, 1, 1)
  if (q == "\"") {
    out = ""
    for (i = 2; i <= length(s); i++) {
      c = substr(s, i, 1)
      if (c == "\\") {
        i++; c = substr(s, i, 1)
        if (c == "n") c = "\\n"; else if (c == "t") c = " "
        out = out c
      } else if (c == "\"") { SCALAR = out; REST = substr(s, i + 1); return 1 }
      else out = out c
    }
    bad("unterminated double-quoted string"); SCALAR = out; REST = ""; return 0
  }
  if (q == "'") {
    out = ""
    for (i = 2; i <= length(s); i++) {
      c = substr(s, i, 1)
      if (c == "'") {
        if (substr(s, i + 1, 1) == "'") { out = out "'"; i++; continue }
        SCALAR = out; REST = substr(s, i + 1); return 1
      }
      out = out c
    }
    bad("unterminated single-quoted string"); SCALAR = out; REST = ""; return 0
  }
  # plain: up to " #" comment
  i = index(s, " #")
  if (i > 0) { SCALAR = rtrim(substr(s, 1, i - 1)); REST = "" }
  else { SCALAR = rtrim(s); REST = "" }
  return 1
}

# Splits "key: value" / "key:"; sets KEY and VAL (raw). Returns 0 if not a mapping entry.
function keyval(s,   i, q) {
  q = substr(s, 1, 1)
  if (q == "\"" || q == "'") {
    scalar(s)
    if (substr(REST, 1, 1) != ":") return 0
    if (length(REST) > 1 && substr(REST, 2, 1) != " ") return 0
    KEY = SCALAR; VAL = substr(REST, 2); sub(/^[ \t]+/, "", VAL); return 1
  }
  i = index(s, ": ")
  if (i == 0) {
    if (s ~ /:$/ ) { KEY = rtrim(substr(s, 1, length(s) - 1)); VAL = ""; return 1 }
    if (s ~ /:[ \t]+#/) { i = index(s, ":"); KEY = substr(s, 1, i - 1); VAL = ""; return 1 }
    return 0
  }
  KEY = rtrim(substr(s, 1, i - 1)); VAL = substr(s, i + 2); sub(/^[ \t]+/, "", VAL)
  if (KEY ~ /^#/) return 0
  return 1
}

function push(p, indent, keyindent) { depth++; fpath[depth] = p; find[depth] = indent; fkey[depth] = keyindent }

# A value after "key:" or "- ": scalar, flow sequence, block scalar or nothing (a nested block follows).
function value(p, v, n,   items, k, cnt) {
  if (v == "" || v ~ /^#/) { push(p, -1, n); return }
  if (v ~ /^[|>][-+0-9]*[ \t]*(#.*)?$/) { blockpath = p; blockind = n; blockval = ""; inblock = 1; blockfold = (substr(v, 1, 1) == ">"); return }
  if (v ~ /^\[/) {
    if (v !~ /\][ \t]*(#.*)?$/) { bad("multi-line flow sequence"); return }
    sub(/^\[[ \t]*/, "", v); sub(/[ \t]*\][ \t]*(#.*)?$/, "", v)
    if (v == "") { emit(p, ""); return }
    cnt = split(v, items, /[ \t]*,[ \t]*/)
    for (k = 1; k <= cnt; k++) { scalar(items[k]); emit(join(p, k), SCALAR) }
    return
  }
  if (v ~ /^\{[ \t]*\}[ \t]*(#.*)?$/) { emit(p, ""); return }
  if (v ~ /^\{/) { bad("flow mappings other than {} are not supported"); return }
  if (v ~ /^[&*!]/) { bad("anchors, aliases and tags are not supported"); return }
  scalar(v); emit(p, SCALAR)
}

# One line's content c at indentation n.
function line(n, c,   p, idx, rest, off) {
  # Resolve a pending "key:" whose children we have not seen yet.
  if (depth > 0 && find[depth] == -1) {
    if (n > fkey[depth] || (n == fkey[depth] && c ~ /^-( |$)/)) find[depth] = n
    else { emit(fpath[depth], ""); depth-- }
  }
  # A sequence written at its key's own indentation ends at the next non-item line there.
  while (depth > 0 && (n < find[depth] || (n == find[depth] && find[depth] == fkey[depth] && c !~ /^-( |$)/))) depth--
  if (depth > 0 && n > find[depth]) { bad("unexpected indentation"); return }
  p = depth > 0 ? fpath[depth] : ""
  if (c ~ /^-( |$)/) {
    idx = ++seq[p]
    rest = c; sub(/^-[ ]*/, "", rest)
    off = length(c) - length(rest)
    if (rest != "" && rest !~ /^#/ && keyval(rest)) {
      push(join(p, idx), n + off, n)
      line(n + off, rest)
      return
    }
    value(join(p, idx), rest, n)
    return
  }
  if (!keyval(c)) { bad("expected \"key: value\" or \"- item\""); return }
  value(join(p, enc(KEY)), VAL, n)
}

BEGIN { depth = 0; inblock = 0; errors = 0 }
{
  sub(/\r$/, "")
  raw = $0
  if (inblock) {
    match(raw, /^ */)
    if (raw ~ /^[ \t]*$/ || RLENGTH > blockind) {
      t = raw
      if (blockstrip == "") { match(raw, /^ */); blockstrip = RLENGTH }
      t = substr(raw, blockstrip + 1)
      blockval = blockval (blockval == "" ? "" : (blockfold ? " " : "\\n")) t
      next
    }
    emit(blockpath, blockval); inblock = 0; blockstrip = ""
  }
  if (raw ~ /^[ \t]*(#.*)?$/) next
  if (NR == 1 && raw ~ /^%/) next
  if (raw ~ /^(---|\.\.\.)[ \t]*(#.*)?$/) { if (NR > 1 && seen) bad("multiple documents"); next }
  if (raw ~ /^ *\t/) { bad("tab in indentation"); next }
  seen = 1
  match(raw, /^ */)
  n = RLENGTH
  line(n, substr(raw, n + 1))
}
END {
  if (inblock) emit(blockpath, blockval)
  while (depth > 0) { if (find[depth] == -1) emit(fpath[depth], ""); depth-- }
  exit errors > 0 ? 2 : 0
}
