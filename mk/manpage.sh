#!/bin/sh
# Writes the calid_mcp(1) manual page, made from the binary's own --help, so
# that the page and the program never disagree.
#   sh mk/manpage.sh BINARY > calid_mcp.1
set -eu
bin=$1
version=$("$bin" --version | head -n 1 | sed 's/^calid-mcp //')
cat <<HEAD
.TH CALID_MCP 1 "" "calid-mcp $version" "User Commands"
.SH NAME
calid_mcp \\- an MCP server for the Cal ID scheduling API
.SH SYNOPSIS
.B calid_mcp
[\\fIoptions\\fR]
.SH DESCRIPTION
calid_mcp lets an AI assistant (any MCP client) use a Cal ID account: bookings,
free slots, event types, contacts, schedules, teams and webhooks. It serves MCP
over Streamable HTTP at /mcp, or over standard input and output with
\\fB\\-\\-stdio\\fR, and makes one HTTPS request to the Cal ID API per tool call.
Each option can also be given by the environment variable in brackets; a flag
wins over its variable.
.SH OPTIONS
HEAD
# "  --flag ARG   help [ENV]" lines become tagged paragraphs
"$bin" --help | awk '
/^  --/ {
    line = substr($0, 3)
    split(line, parts, /  +/)
    flag = parts[1]; text = substr(line, length(flag) + 1); sub(/^ +/, "", text)
    gsub(/-/, "\\-", flag); gsub(/\\/, "\\\\", text); gsub(/-/, "\\-", text)
    n = split(flag, w, " ")
    printf ".TP\n.B %s", w[1]
    if (n > 1) printf " \\fI%s\\fR", w[2]
    printf "\n%s\n", text
}'
cat <<'TAIL'
.SH FILES
.TP
.I /etc/default/calid-mcp
settings of the packaged service
.TP
.I /var/lib/calid-mcp/secret
the server secret of the packaged service (see \fB\-\-secret\-file\fR)
.SH EXIT STATUS
0 after a clean stop, 1 when the server cannot start (the reason is printed),
2 for a usage error.
.SH SEE ALSO
The README of calid-mcp: client configurations, limits, errors, the route map.
TAIL
