# Shared helpers for the CGI scripts (sourced, not served).
param() {
    printf '%s' "$QUERY_STRING" | tr '&' '\n' | sed -n "s/^$1=//p" | head -n 1
}
reply() {
    printf 'Content-Type: text/plain\r\n\r\n%s\n' "$1"
}
