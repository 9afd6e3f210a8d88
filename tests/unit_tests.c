/*
 * Unit tests for the pieces of calid_mcp.c that need no sockets: the HTTP
 * request parser, chunked bodies, the strict JSON checker, string helpers,
 * tool argument checks, the route map and JSON-RPC dispatch. The server file
 * is included whole so that its static functions can be reached.
 */
#include "../calid_mcp.c"

static int passed, failed;

#define CHECK(cond, ...)                                    \
    do {                                                    \
        if (cond) {                                         \
            passed++;                                       \
        } else {                                            \
            failed++;                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);     \
            printf(__VA_ARGS__);                            \
            printf("\n");                                   \
        }                                                   \
    } while (0)

static int parse(const char *s, struct http_req *r)
{
    return http_parse_head(s, strlen(s), 0, CM_MAX_HEADER_BYTES, r);
}

static void test_http_parser(void)
{
    struct http_req r;
    const char *ok = "POST /mcp?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12\r\nX-A:  spaced value  \r\n\r\n{\"a\":1}";
    int n = parse(ok, &r);
    CHECK(n > 0 && (size_t)n == strlen(ok) - strlen("{\"a\":1}"), "head length %d", n);
    CHECK(view_eq(r.method, "POST") && view_eq(r.path, "/mcp") && view_eq(r.query, "x=1"), "request line views");
    CHECK(r.content_length == 12 && r.keep_alive && r.minor == 1, "content length / keep-alive");
    CHECK(http_header(&r, "x-a") && view_eq(*http_header(&r, "X-A"), "spaced value"), "header trimmed, case-insensitive");
    CHECK(parse("GET /mcp HTTP/1.1\r\nHost: a\r\n", &r) == 0, "partial head needs more");
    CHECK(parse("GET /mcp HTTP/1.1\nHost: a\n\n", &r) > 0, "bare LF line endings");
    CHECK(parse("GET /mcp HTTP/1.0\r\n\r\n", &r) > 0 && !r.keep_alive, "HTTP/1.0 closes by default");
    CHECK(parse("GET /mcp HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) > 0 && r.keep_alive, "HTTP/1.0 keep-alive");
    CHECK(parse("GET /mcp HTTP/1.1\r\nConnection: close\r\n\r\n", &r) > 0 && !r.keep_alive, "Connection: close");
    CHECK(parse("GET /mcp HTTP/2.0\r\n\r\n", &r) == -505, "HTTP/2.0 -> 505");
    CHECK(parse("GET /mcp FTP/1.1\r\n\r\n", &r) == -400, "bad version -> 400");
    CHECK(parse("GET  /mcp HTTP/1.1\r\n\r\n", &r) == -400, "double space -> 400");
    CHECK(parse("\x01\x02 / HTTP/1.1\r\n\r\n", &r) == -400, "binary method -> 400");
    CHECK(parse("GET /mcp HTTP/1.1\r\nBad Header: x\r\n\r\n", &r) == -400, "space in header name -> 400");
    CHECK(parse("GET /mcp HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", &r) == -400, "obs-fold -> 400");
    CHECK(parse("GET /mcp HTTP/1.1\r\nA: b\x01\r\n\r\n", &r) == -400, "control char in value -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", &r) == -400, "CL + TE -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &r) == -400, "conflicting CL -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &r) > 0 && r.content_length == 5, "repeated equal CL ok");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &r) == -400, "negative CL -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", &r) == -400, "huge CL -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", &r) == -400, "CL with space -> 400");
    CHECK(parse("POST /mcp HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &r) == -501, "TE gzip -> 501");
    CHECK(parse("POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r) > 0 && r.chunked, "chunked");
    CHECK(parse("POST /mcp HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", &r) > 0 && r.expect_continue, "Expect");
    CHECK(parse("POST /mcp HTTP/1.1\r\nExpect: other\r\n\r\n", &r) == -417, "unknown Expect -> 417");
    {
        char big[CM_MAX_HEADER_BYTES + 64];
        size_t i;
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        for (i = 19; i < sizeof big - 1; i++)
            big[i] = 'a';
        big[sizeof big - 1] = 0;
        CHECK(parse(big, &r) == -431, "oversized head -> 431");
    }
    {
        char many[4096];
        struct textbuf b = {many, sizeof many, 0, 0};
        int i;
        tb_str(&b, "GET / HTTP/1.1\r\n");
        for (i = 0; i <= CM_MAX_HEADERS; i++)
            tb_printf(&b, "H%d: v\r\n", i);
        tb_str(&b, "\r\n");
        CHECK(parse(many, &r) == -431, "too many headers -> 431");
    }
}

static void test_chunked(void)
{
    char body[128];
    size_t enc, dec;
    strcpy(body, "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT");
    CHECK(chunked_scan(body, strlen(body), 100, &enc, &dec) == 1 && dec == 11, "chunked complete");
    chunked_decode(body, enc);
    CHECK(memcmp(body, "hello world", 11) == 0, "chunked decoded in place");
    CHECK(memcmp(body + enc, "NEXT", 4) == 0, "bytes after the body untouched");
    CHECK(chunked_scan("5\r\nhel", 7, 100, &enc, &dec) == 0, "partial chunk");
    CHECK(chunked_scan("zz\r\n", 4, 100, &enc, &dec) == -1, "bad chunk size");
    CHECK(chunked_scan("123456789\r\n", 11, 1u << 30, &enc, &dec) == -1, "too many hex digits");
    CHECK(chunked_scan("ff\r\n", 4, 100, &enc, &dec) == -2, "chunk over the body limit");
    CHECK(chunked_scan("3\r\nabcX\r\n0\r\n\r\n", 14, 100, &enc, &dec) == -1, "missing CRLF after data");
    CHECK(chunked_scan("0x5\r\nhello\r\n0\r\n\r\n", 20, 100, &enc, &dec) == -1, "0x5 is not a chunk size");
    CHECK(chunked_scan("5 ;a=b\r\nhello\r\n0\r\n\r\n", 22, 100, &enc, &dec) == 1 && dec == 5, "white space before an extension");
    CHECK(chunked_scan("5;a\rb\r\nhello\r\n0\r\n\r\n", 22, 100, &enc, &dec) == -1, "bare CR in a chunk extension");
    CHECK(chunked_scan("5;a\r", 4, 100, &enc, &dec) == 0, "CR at the end of what arrived: wait for LF");
    CHECK(chunked_scan("0\r\nX: a\rb\r\n\r\n", 15, 100, &enc, &dec) == -1, "bare CR in a trailer");
}

static int jok(const char *s)
{
    const char *why;
    size_t at;
    return json_check(s, strlen(s), &why, &at) == 0;
}

static void test_json_check(void)
{
    char deep[200];
    int i;
    CHECK(jok("{\"a\":[1,-2.5e3,true,false,null,\"x\\u00e9\\n\"]}"), "valid document");
    CHECK(jok("  \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"  "), "valid UTF-8");
    CHECK(!jok("{\"a\":1,}"), "trailing comma");
    CHECK(!jok("{\"a\" 1}"), "missing colon");
    CHECK(!jok("{a:1}"), "unquoted key");
    CHECK(!jok("[01]"), "leading zero");
    CHECK(!jok("[1.]"), "bare decimal point");
    CHECK(!jok("[tru]"), "bad literal");
    CHECK(!jok("{} {}"), "two values");
    CHECK(!jok("\"\xff\""), "invalid UTF-8 byte");
    CHECK(!jok("\"\xc0\xaf\""), "overlong UTF-8");
    CHECK(!jok("\"\xed\xa0\x80\""), "UTF-8 surrogate");
    CHECK(!jok("\"a\tb\""), "raw tab in string");
    CHECK(!jok("\"\\x\""), "bad escape");
    CHECK(!jok("\"\\u12\""), "short \\u");
    CHECK(!jok(""), "empty input");
    for (i = 0; i < 70; i++)
        deep[i] = '[';
    for (i = 70; i < 140; i++)
        deep[i] = ']';
    deep[140] = 0;
    CHECK(!jok(deep), "nesting over 64");
    deep[0] = 0;
    for (i = 0; i < 60; i++)
        strcat(deep, "[");
    for (i = 0; i < 60; i++)
        strcat(deep, "]");
    CHECK(jok(deep), "nesting of 60 is fine");
}

/* The checker fed in two pieces, split at every byte, and byte by byte,
 * says what it says for the whole buffer: the same verdict, reason and offset. */
static void test_json_split(void)
{
    static const char *const docs[] = {
        "{\"a\":[1,-2.5e3,true,false,null,\"x\\u00e9\\n\"],\"b\":{}}",
        "  \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"  ", "[0,-0,1e5,1E+5,2.5e-3,[],{},[[]]]", "-2.5e3", "null",
        "{\"a\":1,}", "{\"a\" 1}", "[01]", "[1.]", "[tru]", "{} {}", "\"\xff\"", "\"\xc0\xaf\"",
        "\"\xed\xa0\x80\"", "\"\xe2\x82\"", "\"\xe2\x82", "\"a\tb\"", "\"\\x\"", "\"\\u12", "\"\\u12G4\"", "\"ab\\",
        "", " \r\n ", "[1,]", "{\"a\":1", "[1", "1e", "-", "tru", "True", "{\"a\":1}\x01", "[1] x",
    };
    size_t d;
    for (d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        const char *s = docs[d], *why = NULL, *w2;
        size_t n = strlen(s), at = 0, k, i;
        int whole = json_check(s, n, &why, &at), bad = 0;
        for (k = 0; k <= n; k++) {
            struct jscan j;
            int r;
            js_init(&j);
            r = js_feed(&j, s, k) == 0 && js_feed(&j, s + k, n - k) == 0 && js_finish(&j) == 0 ? 0 : -1;
            w2 = j.why;
            if (r != whole || (r < 0 && (w2 != why || j.mark != at)))
                bad++;
        }
        {
            struct jscan j;
            int r = 0;
            js_init(&j);
            for (i = 0; i < n && r == 0; i++)
                r = js_feed(&j, s + i, 1);
            r = r == 0 && js_finish(&j) == 0 ? 0 : -1;
            if (r != whole || (r < 0 && (j.why != why || j.mark != at)))
                bad++;
        }
        CHECK(bad == 0, "split feeding agrees with the whole buffer for doc %u (%s at %u)", (unsigned)d,
              whole ? why : "valid", (unsigned)at);
    }
    {   /* depth: 65 open containers may be empty; a value inside the 65th is refused */
        char deep[200];
        memset(deep, '[', 65);
        memset(deep + 65, ']', 65);
        deep[130] = 0;
        CHECK(jok(deep), "65 nested empty arrays");
        memset(deep, '[', 66);
        memset(deep + 66, ']', 66);
        deep[132] = 0;
        CHECK(!jok(deep), "66 nested arrays");
    }
}

static void test_strings(void)
{
    char out[64];
    unsigned char bin[16];
    size_t len = 0;
    static jsmntok_t t[8];
    struct jdoc d;
    const char *why;
    size_t at;
    const char *js = "[\"a\\\"b\\u00e9\\ud83d\\ude00\\ud800x\"]";
    CHECK(jdoc_parse(&d, js, strlen(js), t, 8, &why, &at) == 0, "parse string array");
    CHECK(tok_unescape(&d, 1, out, sizeof out) == 13 && memcmp(out, "a\"b\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx", 13) == 0,
          "unescape: quote, e-acute, emoji pair, lone surrogate");
    CHECK(percent_encode("a b/é?", strlen("a b/é?"), out, sizeof out, &len) == 0 && strcmp(out, "a%20b%2F%C3%A9%3F") == 0,
          "percent-encoding: %s", out);
    CHECK(base64_decode("aGVsbG8=", 8, bin, sizeof bin) == 5 && memcmp(bin, "hello", 5) == 0, "base64");
    CHECK(base64_decode("aGVsbG8", 7, bin, sizeof bin) == 5, "base64 without padding");
    CHECK(base64_decode("a$==", 4, bin, sizeof bin) == -1, "base64 bad character");
    CHECK(json_escaped_len("a\"\n\x01", 4) == 1 + 2 + 2 + 6, "escaped length");
    CHECK(const_time_eq("abc", 3, "abc", 3) && !const_time_eq("abc", 3, "abd", 3) && !const_time_eq("ab", 2, "abc", 3),
          "constant-time compare");
}

/* json_message_rules on a copy of s: 0 ok (the canonical text in rules_text),
 * or -1 with the reason in rules_why. */
static char rules_text[1024], rules_why[160];
static int rules(const char *s)
{
    static jsmntok_t t[128];
    struct jdoc d;
    const char *why;
    size_t at;
    strcpy(rules_text, s);
    rules_why[0] = 0;
    if (jdoc_parse(&d, rules_text, strlen(rules_text), t, 128, &why, &at) != 0)
        return -100;
    return json_message_rules(&d, rules_text, rules_why, sizeof rules_why);
}

static void test_message_rules(void)
{
    CHECK(rules("{\"name\":\"delete_team\",\"a\":{\"name\":1},\"name\":\"get_teams\"}") == -1 &&
              strstr(rules_why, "\"name\" appears twice"), "duplicate key at the top: %s", rules_why);
    CHECK(rules("{\"p\":{\"a\":1,\"b\":[{\"x\":1,\"x\":2}]}}") == -1 && strstr(rules_why, "\"x\""),
          "duplicate key deep inside: %s", rules_why);
    CHECK(rules("{\"userId\":1,\"user\\u0049d\":2}") == -1 && strstr(rules_why, "\"userId\" appears twice"),
          "an escaped key is the key it spells: %s", rules_why);
    CHECK(rules("{\"a\":{\"k\":1},\"b\":{\"k\":1},\"k\":[{\"k\":1},{\"k\":2}]}") == 0, "same key in sibling objects is fine");
    CHECK(rules("{\"user\\u0049d\":5,\"t\\/x\":\"\\u0041\"}") == 0 && strstr(rules_text, "{\"userId\"     :5,\"t/x\" :\"\\u0041\"}"),
          "keys rewritten canonically, values left alone: %s", rules_text);
    CHECK(rules("{\"a\\u0000b\":1}") == -1 && strstr(rules_why, "control character"), "NUL in a key: %s", rules_why);
    CHECK(rules("{\"a\\u007f\":1}") == -1 && strstr(rules_why, "control character"), "DEL in a key");
    CHECK(rules("{\"a\x7f\":1}") == -1, "raw DEL in a key");
    CHECK(rules("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"delete_team\\u0000-harmless\"}}") == -1 &&
              strstr(rules_why, "params.name holds a control character"), "NUL in a tool name: %s", rules_why);
    CHECK(rules("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\\n\"}") == -1 && strstr(rules_why, "method"), "newline in a method");
    CHECK(rules("[{\"method\":\"ping\"},{\"method\":\"x\",\"params\":{\"uri\":\"cal://\\u0001\"}}]") == -1 &&
              strstr(rules_why, "params.uri"), "control character in a resource URI, in a batch: %s", rules_why);
    CHECK(rules("{\"method\":\"tools\\/list\",\"params\":{\"name\":\"get_\\u0075sers_me\"}}") == 0 &&
              strstr(rules_text, "\"tools/list\"") && strstr(rules_text, "\"get_users_me\""),
          "method and tool name rewritten canonically: %s", rules_text);
    CHECK(rules("{\"params\":{\"arguments\":{\"text\":\"a\\u0000b\"}}}") == 0, "a NUL inside an argument value is data");
    CHECK(rules("{\"\\ud83d\\ude00\":1,\"\\uD83D\\uDE00\":2}") == -1, "surrogate pair keys compared decoded");
    CHECK(rules("{\"\\ud800\":1,\"\\uD800\":2}") == -1, "lone surrogate keys compared case-blind in hex");
    CHECK(rules("{\"\\\"\":1,\"\\u0022\":2}") == -1 && strstr(rules_why, "\"\\\"\""), "escaped quote keys: %s", rules_why);
    CHECK(rules("{\"a\":1}") == 0 && rules("[1,2]") == 0 && rules("\"x\"") == 0, "plain documents pass");
}

/* Runs dispatch on one message; returns the rendered answer text. */
static char answer[sizeof tool_list + 4096];
static int run_dispatch(const char *msg, int era, struct pending_call *pc)
{
    static char body[4096];
    static char outbuf[8192];
    static jsmntok_t t[256];
    struct jdoc d;
    struct rpc_ctx c;
    struct resp r;
    const char *why;
    size_t at, off = 0;
    int res, i;
    strcpy(body, msg);
    memset(&c, 0, sizeof c);
    c.era = era;
    c.version = era == ERA_MODERN ? MODERN_VERSION : LATEST_SESSION_VERSION;
    c.token = "calid_unit";
    c.token_len = 10;
    c.http_status = 200;
    if (jdoc_parse(&d, body, strlen(body), t, 256, &why, &at) != 0)
        return -100;
    rs_init(&r, outbuf, sizeof outbuf, 0);
    res = dispatch(&c, &d, 0, &r, pc);
    for (i = 0; i < r.nseg; i++) {
        size_t w;
        if (r.seg[i].escape) {
            json_escape_some(r.seg[i].p, r.seg[i].n, answer + off, sizeof answer - off, &w);
            off += w;
        } else {
            memcpy(answer + off, r.seg[i].p, r.seg[i].n);
            off += r.seg[i].n;
        }
    }
    answer[off] = 0;
    if (era == ERA_MODERN && c.http_status != 200)
        return c.http_status;
    return res;
}

static void test_dispatch(void)
{
    struct pending_call pc;
    char err[128];
    const char *why;
    size_t at;
    CHECK(tool_list_check(err, sizeof err) == 0, "tool list checks: %s", err);
    CHECK(N_TOOLS == 57, "57 tools, got %u", (unsigned)N_TOOLS);
    {
        static char list[70000];
        size_t n = sizeof tool_list - 1;
        list[0] = '[';
        memcpy(list + 1, (const char *)&tool_list + 1, n);
        CHECK(n + 1 < sizeof list && json_check(list, n + 1, &why, &at) == 0, "tool list is valid JSON");
    }
    memset(&pc, 0, sizeof pc);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}", ERA_SESSION, &pc) == D_REPLIED &&
              strcmp(answer, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}") == 0, "ping: %s", answer);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", ERA_SESSION, &pc) == D_NO_REPLY,
          "notification gets no reply");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"nope\"}", ERA_SESSION, &pc) == D_REPLIED &&
              strstr(answer, "-32601") && strstr(answer, "\"id\":\"a\""), "unknown method: %s", answer);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}", ERA_MODERN, &pc) == 404, "modern unknown method -> 404");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", ERA_MODERN, &pc) == 404, "modern ping -> 404");
    CHECK(run_dispatch("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "-32600"),
          "jsonrpc 1.0 -> -32600");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "-32600"),
          "fractional id -> -32600");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":[]}", ERA_SESSION, &pc) == D_REPLIED &&
              strstr(answer, "-32602"), "array params -> -32602");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", ERA_MODERN, &pc) == D_REPLIED &&
              strstr(answer, "\"resultType\":\"complete\"") && strstr(answer, "\"cacheScope\"") && strstr(answer, "\"ttlMs\""),
          "modern tools/list carries cache hints");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}", ERA_SESSION, &pc) ==
              D_REPLIED && strstr(answer, "-32602") && strstr(answer, "Unknown tool: nope"), "unknown tool");
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_booking_by_id\",\"arguments\":{}}}",
                       ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "\"isError\":true") && strstr(answer, "'bookingId'"),
          "missing argument: %s", answer);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_booking_by_id\",\"arguments\":{\"bookingId\":[1]}}}",
                       ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "must be") && strstr(answer, "got array"),
          "mistyped argument: %s", answer);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_booking\",\"arguments\":{\"status\":\"someday\"}}}",
                       ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "must be one of"), "enum checked: %s", answer);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_users_me\",\"arguments\":5}}",
                       ERA_SESSION, &pc) == D_REPLIED && strstr(answer, "-32602"), "arguments not an object");
    memset(&pc, 0, sizeof pc);
    CHECK(run_dispatch("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{\"name\":\"get_users_me\"}}", ERA_SESSION, &pc) ==
              D_PENDING && pc.active && view_eq(pc.id, "9") && strcmp(tools[pc.tool].name, "get_users_me") == 0,
          "valid call is pending");
    {   /* a long id is kept whole for the answer, string or number */
        static char msg[2048], want[1100];
        char digits[1001];
        memset(digits, '7', 1000);
        digits[1000] = 0;
        snprintf(want, sizeof want, "\"%.300s\\u00e9\"", digits);
        snprintf(msg, sizeof msg, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"tools/call\",\"params\":{\"name\":\"get_users_me\"}}", want);
        memset(&pc, 0, sizeof pc);
        CHECK(run_dispatch(msg, ERA_SESSION, &pc) == D_PENDING && pc.id.n == strlen(want) && memcmp(pc.id.p, want, pc.id.n) == 0,
              "a 307-byte string id is kept whole");
        snprintf(msg, sizeof msg, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"tools/call\",\"params\":{\"name\":\"get_users_me\"}}", digits);
        memset(&pc, 0, sizeof pc);
        CHECK(run_dispatch(msg, ERA_SESSION, &pc) == D_PENDING && pc.id.n == 1000 && memcmp(pc.id.p, digits, 1000) == 0,
              "a 1000-digit number id is kept whole");
        snprintf(msg, sizeof msg, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"nope\"}", digits);
        CHECK(run_dispatch(msg, ERA_SESSION, &pc) == D_REPLIED && strstr(answer, digits) && strstr(answer, "-32601"),
              "an error answer carries the long id");
    }
}

/* Builds the API request for a tool call and checks path and body. */
static void check_route(const char *tool, const char *args, const char *want_path, const char *want_body)
{
    static char js[2048];
    static jsmntok_t t[128];
    struct jdoc d;
    const char *why;
    size_t at;
    char msg[256];
    int ti = find_tool(tool);
    long blen = 0;
    snprintf(js, sizeof js, "%s", args);
    CHECK(ti >= 0, "tool %s exists", tool);
    if (ti < 0 || jdoc_parse(&d, js, strlen(js), t, 128, &why, &at) != 0)
        return;
    msg[0] = 0;
    CHECK(validate_args(&tools[ti], &d, 0, msg, sizeof msg) == 0, "%s args valid: %s", tool, msg);
    CHECK(build_path(&tools[ti], &d, 0, msg, sizeof msg) == 0 && strcmp(req_path, want_path) == 0, "%s path %s", tool, req_path);
    if (want_body) {
        static char body[4096];
        req_body = body;
        req_body_cap = sizeof body;
        blen = build_json_body(&tools[ti], &d, 0);
        CHECK(blen >= 0 && strcmp(req_body, want_body) == 0, "%s body %s", tool, req_body);
    }
}

/* Arguments refused with a message naming the problem: by the schema check,
 * or (at_path) passing it and refused when they become the API path. */
static void check_refused_at(const char *tool, const char *args, const char *want, int at_path)
{
    static char js[1024];
    static jsmntok_t t[64];
    struct jdoc d;
    const char *why;
    size_t at;
    char msg[512];
    int ti = find_tool(tool), refused = 0;
    snprintf(js, sizeof js, "%s", args);
    msg[0] = 0;
    if (ti >= 0 && jdoc_parse(&d, js, strlen(js), t, 64, &why, &at) == 0) {
        int v = validate_args(&tools[ti], &d, 0, msg, sizeof msg);
        refused = at_path ? v == 0 && build_path(&tools[ti], &d, 0, msg, sizeof msg) < 0 : v < 0;
    }
    CHECK(refused && strstr(msg, want), "%s %s refused with '%s': %s", tool, args, want, msg);
}

static void check_refused(const char *tool, const char *args, const char *want) { check_refused_at(tool, args, want, 0); }
static void check_refused_path(const char *tool, const char *args, const char *want) { check_refused_at(tool, args, want, 1); }

static void test_routes(void)
{
    size_t i;
    int get_read = 1;
    for (i = 0; i < N_TOOLS; i++)
        if ((strcmp(tools[i].method, "GET") == 0) != ((tools[i].flags & T_READ) != 0))
            get_read = 0;
    CHECK(get_read, "every GET and only GETs are read-only");
    check_route("get_booking", "{\"status\":\"past\",\"limit\":5}", "/booking?status=past&limit=5", NULL);
    check_route("get_booking_by_id", "{\"bookingId\":42}", "/booking/42", NULL);
    check_route("cancel_booking", "{\"bookingId\":42,\"cancellationReason\":\"sick\"}", "/booking/42/cancel",
                "{\"cancellationReason\":\"sick\"}");
    check_route("cancel_booking", "{\"bookingId\":42}", "/booking/42/cancel", "{}");
    check_route("create_booking",
                "{\"eventTypeId\":3,\"start\":\"2026-12-01T15:00:00Z\",\"end\":\"2026-12-01T15:30:00Z\",\"timeZone\":\"Europe/Berlin\",\"responses\":{\"name\":\"John Doe\",\"email\":\"j@x.io\",\"guests\":[]}}",
                "/booking",
                "{\"eventTypeId\":3,\"start\":\"2026-12-01T15:00:00Z\",\"end\":\"2026-12-01T15:30:00Z\",\"timeZone\":\"Europe/Berlin\",\"responses\":{\"name\":\"John Doe\",\"email\":\"j@x.io\",\"guests\":[]}}");
    check_route("get_slots", "{\"eventTypeId\":3,\"start\":\"2026-11-30\",\"end\":\"2026-11-30\",\"x\\r\\ny\":[\"a\",\"b c\"]}",
                "/slots?eventTypeId=3&start=2026-11-30&end=2026-11-30&x%0D%0Ay=a&x%0D%0Ay=b%20c", NULL);
    check_route("get_slot", "{\"uid\":\"a b?c\"}", "/slots/a%20b%3Fc", NULL);
    check_route("update_user_profile", "{\"bio\":\"hi\"}", "/users/edit-profile", "{\"bio\":\"hi\"}");
    check_route("change_booking_confirmation_status", "{\"bookingId\":5,\"confirmed\":false}",
                "/booking/5/change_confirmation", "{\"confirmed\":false}");
    check_refused("get_booking_by_id", "{\"bookingId\":\"abc\"}", "must be integer");
    check_refused("get_booking_by_id", "{\"bookingId\":0}", "must be >= 1");
    check_refused("get_event_types", "{\"limit\":500}", "must be <= 100");
    check_refused("create_eventtype", "{\"title\":\"abc\",\"slug\":\"abcd\"}", "4 to 255 characters");
    check_refused("create_booking", "{\"start\":\"2026-12-01T15:00:00Z\",\"end\":\"2026-12-01T15:30:00Z\",\"responses\":{}}",
                  "'timeZone'");
    check_refused_path("get_slot", "{\"uid\":\"a/b\"}", "no '/'");
    check_refused_path("get_webhook_by_id", "{\"webhookId\":\"..\"}", "not '.' or '..'");
    check_refused_path("get_users", "{\"username\":\".\"}", "not '.' or '..'");
    check_route("get_team_membership", "{\"teamId\":7,\"membershipId\":9}", "/teams/7/memberships/9", NULL);
    check_route("update_team_membership", "{\"teamId\":7,\"membershipId\":9,\"role\":\"ADMIN\"}", "/teams/7/memberships/9",
                "{\"role\":\"ADMIN\"}");
}

static void test_sessions(void)
{
    char id[SESSION_ID_CHARS + 1], id2[SESSION_ID_CHARS + 1], bad[SESSION_ID_CHARS + 1];
    struct session s;
    struct view v;
    int64_t t0 = 1800000000;
    size_t i;
    for (i = 0; i < N_SESSION_VERSIONS; i++) { /* every version served can be named in an id, and read back */
        CHECK(session_create(session_versions[i], "calid_a", 7, t0, id) == 0, "id for %s", session_versions[i]);
        v.p = id;
        v.n = SESSION_ID_CHARS;
        CHECK(session_open(v, "calid_a", 7, 5000, t0, &s) == 0 && s.version == session_versions[i], "%s read back",
              session_versions[i]);
    }
    CHECK(session_create("2099-01-01", "calid_a", 7, t0, id) < 0, "no id for a version without a code");
    CHECK(session_create("2025-03-26", "calid_a", 7, t0, id) == 0 && strlen(id) == SESSION_ID_CHARS, "session created");
    for (i = 0; i < SESSION_ID_CHARS; i++)
        CHECK(id[i] > 0x20 && id[i] < 0x7f, "visible ASCII");
    v.p = id;
    v.n = SESSION_ID_CHARS;
    CHECK(session_open(v, "calid_a", 7, 5000, t0 + 10, &s) == 0 && strcmp(s.version, "2025-03-26") == 0,
          "valid, and the version travels in the id");
    CHECK(session_open(v, "calid_b", 7, 5000, t0 + 10, &s) < 0, "another token: refused");
    CHECK(session_open(v, "calid_a", 7, 5000, t0 + CM_SESSION_TTL_MS / 1000 + 1, &s) < 0, "expired by its creation time");
    CHECK(session_open(v, "calid_a", 7, 5000, t0 - CM_SESSION_CLOCK_SKEW_S - 1, &s) < 0, "too far from the future");
    CHECK(session_create("2025-03-26", "calid_a", 7, t0, id2) == 0 && strcmp(id, id2) != 0, "ids differ");
    for (i = 0; i < SESSION_ID_CHARS; i++) { /* every single-character change is refused */
        memcpy(bad, id, sizeof bad);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        v.p = bad;
        CHECK(session_open(v, "calid_a", 7, 5000, t0 + 10, &s) < 0, "tampered id at %lu", (unsigned long)i);
    }
    v.p = id;
    v.n = SESSION_ID_CHARS - 1;
    CHECK(session_open(v, "calid_a", 7, 5000, t0 + 10, &s) < 0, "short id");
    /* another secret: another instance that does not share it */
    v.n = SESSION_ID_CHARS;
    {
        unsigned char keep[32];
        memcpy(keep, server_secret, 32);
        server_secret[0] ^= 1;
        sid_key.dig_vtable = NULL;
        CHECK(session_open(v, "calid_a", 7, 5000, t0 + 10, &s) < 0, "another secret: refused");
        memcpy(server_secret, keep, 32);
        sid_key.dig_vtable = NULL;
        CHECK(session_open(v, "calid_a", 7, 5000, t0 + 10, &s) == 0, "same secret: accepted");
    }
    /* ending it */
    CHECK(session_check(v, "calid_a", 7, t0 + 10, &s) == 0 && ended_add(&s, 5000, t0 + 10) == 0, "ended");
    CHECK(session_open(v, "calid_a", 7, 6000, t0 + 11, &s) < 0, "ended: refused");
    CHECK(ended_in_use(t0 + 11) == 1 && ended_in_use(t0 + CM_SESSION_TTL_MS / 1000 + 1) == 0, "ended entry expires with the id");
}

/* Strangers opening and ending sessions with many tokens neither bring back
 * an ended session nor take more than a token's share. */
static void test_ended_churn(void)
{
    char id[SESSION_ID_CHARS + 1], junk[SESSION_ID_CHARS + 1], tok[32];
    struct session s;
    struct view v = {id, SESSION_ID_CHARS}, j = {junk, SESSION_ID_CHARS};
    int64_t t0 = 1800000000;
    int k, refused = 0;
    memset(ended, 0, sizeof ended);
    CHECK(session_create("2025-11-25", "calid_real", 10, t0, id) == 0, "real session");
    CHECK(session_check(v, "calid_real", 10, t0, &s) == 0 && ended_add(&s, 1000, t0) == 0, "real DELETE");
    /* one junk token: only its own share */
    for (k = 0; k < 3 * CM_MAX_ENDED_SESSIONS; k++) {
        session_create("2025-11-25", "calid_junk", 10, t0, junk);
        if (session_check(j, "calid_junk", 10, t0, &s) == 0)
            refused += ended_add(&s, 2000, t0) < 0;
    }
    CHECK(refused == 0 && ended_holding(s.token_fp, t0) == CM_ENDED_PER_TOKEN, "one token holds its share");
    /* many junk tokens, right after the real DELETE: the table fills, then refuses */
    refused = 0;
    for (k = 0; k < 3 * CM_MAX_ENDED_SESSIONS; k++) {
        snprintf(tok, sizeof tok, "junk%d", k);
        session_create("2025-11-25", tok, strlen(tok), t0, junk);
        if (session_check(j, tok, strlen(tok), t0, &s) == 0)
            refused += ended_add(&s, 3000, t0) < 0;
    }
    CHECK(refused > 0 && ended_in_use(t0) == CM_MAX_ENDED_SESSIONS, "full table refuses (%d refused)", refused);
    CHECK(session_open(v, "calid_real", 10, 4000, t0, &s) < 0, "the real ended session stays ended");
    /* later, entries not used for CM_ENDED_SPARE_MS make room: the biggest holder's first */
    session_create("2025-11-25", "calid_late", 10, t0, junk);
    CHECK(session_check(j, "calid_late", 10, t0, &s) == 0 && ended_add(&s, 3000 + CM_ENDED_SPARE_MS, t0) == 0,
          "room once entries are old");
    CHECK(session_open(v, "calid_real", 10, 4000 + CM_ENDED_SPARE_MS, t0, &s) < 0, "the biggest holder gave room, not the real one");
    memset(ended, 0, sizeof ended);
}

static void test_operations(void)
{
    char t[24];
    struct view v = {"tools/call", 10}, w = {"tools/call2", 11};
    utc_text(0, t);
    CHECK(strcmp(t, "1970-01-01T00:00:00Z") == 0, "epoch %s", t);
    utc_text(951782400, t);
    CHECK(strcmp(t, "2000-02-29T00:00:00Z") == 0, "leap day %s", t);
    utc_text(1796152861, t);
    CHECK(strcmp(t, "2026-12-01T19:21:01Z") == 0, "2026 %s", t);
    CHECK(strcmp(metric_methods[metric_method(v)], "tools/call") == 0, "known method");
    CHECK(metric_method(w) == METHOD_OTHER, "unknown method is other");
    CHECK(metric_statuses[metric_status(200)] == 200 && metric_statuses[metric_status(299)] == 0, "status labels");
}

/* OAuth sign-in (section 11b): the pieces that need no connection. */
static void test_oauth(void)
{
    static const char *const good[] = {"https://claude.ai/api/mcp/auth_callback", "http://127.0.0.1:33418/cb",
                                       "http://localhost/cb", "http://[::1]:8080/cb?x=1", "cursor://anysphere.cursor-retrieval/cb",
                                       "com.example.app:/oauth2redirect", "https://a.example:8443"};
    static const char *const bad[] = {"", "http://example.com/cb", "http://localhost.evil.example/cb", "http://127.0.0.1.evil/cb",
                                      "https://a.example/cb#f", "https://u@a.example/", "javascript:alert(1)", "JavaScript:x",
                                      "data:text/html,x", "file:///etc", "nocolon", "https://", "https://a b/", "1abc:/x", "x:"};
    struct grant g, o;
    struct oa_client cl;
    char text[OA_SEALED_MAX + 1], enc[16];
    unsigned char raw[5] = {0xfb, 0xff, 0x00, 0x10, 0x7f};
    const char *why = NULL;
    size_t i;
    for (i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK(redirect_uri_problem(good[i]) == NULL, "redirect URI %s refused: %s", good[i], redirect_uri_problem(good[i]));
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(redirect_uri_problem(bad[i]) != NULL, "redirect URI '%s' accepted", bad[i]);
    CHECK(b64url_encode(raw, 5, enc) == 7 && strcmp(enc, "-_8AEH8") == 0, "base64url %s", enc);
    CHECK(form_parse("a=1&client_id=x%2By+z&state=&api_key=k%3D", 41, &why) == 0 && strcmp(form.client_id, "x+y z") == 0 &&
              strcmp(form.api_key, "k=") == 0 && form.state[0] == 0, "form decoding");
    CHECK(form_parse("state=a&state=b", 15, &why) < 0 && strcmp(why, "state") == 0, "repeated field refused");
    CHECK(form_parse("state=%zz", 9, &why) < 0 && form_parse("state=%00", 9, &why) < 0, "bad escapes refused");
    /* seal and open */
    cfg.public_url = "https://mcp.example";
    cfg.oauth = 1;
    CHECK(oauth_start(text, sizeof text) == 0 && strcmp(audience, "https://mcp.example/mcp") == 0, "public URL: %s", text);
    memset(&g, 0, sizeof g);
    g.exp = cm_port_unix_time() + 60;
    memset(g.client, 7, 16);
    memset(g.challenge, 9, 32);
    g.audience = (struct view){audience, strlen(audience)};
    g.key = (struct view){"calid_secret_key", 16};
    CHECK(grant_seal(G_CODE, &g, text, sizeof text) == 0 && strncmp(text, "cmco_", 5) == 0, "seal a code");
    CHECK(strstr(text, "calid") == NULL, "sealed text");
    CHECK(grant_open(G_CODE, (struct view){text, strlen(text)}, &o, cm_port_unix_time()) == OPEN_OK && view_eq(o.key, "calid_secret_key") &&
              memcmp(o.challenge, g.challenge, 32) == 0, "open the code");
    CHECK(grant_open(G_ACCESS, (struct view){text, strlen(text)}, &o, cm_port_unix_time()) == OPEN_BAD, "a code is not an access token");
    CHECK(grant_open(G_CODE, (struct view){text, strlen(text)}, &o, cm_port_unix_time() + 61) == OPEN_EXPIRED, "expiry");
    text[20] = text[20] == 'A' ? 'B' : 'A';
    CHECK(grant_open(G_CODE, (struct view){text, strlen(text)}, &o, cm_port_unix_time()) == OPEN_BAD, "tampered");
    CHECK(client_open((struct view){"cmcl_AAAA", 9}, &cl) < 0, "a made-up client id");
    cfg.public_url = NULL;
    cfg.oauth = 0;
    /* the used tables and the rate limit */
    {
        unsigned char id[16] = {1};
        struct used_id t[2];
        memset(t, 0, sizeof t);
        CHECK(used_mark(t, 2, id, 100, 50, 0) == 1 && used_mark(t, 2, id, 100, 60, 0) == 0, "a used id is refused");
        CHECK(used_mark(t, 2, id, 300, 100, 0) == 1, "until it expires");
        id[0] = 2;
        CHECK(used_mark(t, 2, id, 200, 100, 0) == 1, "second slot");
        id[0] = 3;
        CHECK(used_mark(t, 2, id, 400, 100, 0) == -1 && used_mark(t, 2, id, 400, 100, 1) == 1, "full: refuse, or evict");
        id[0] = 2;
        CHECK(used_mark(t, 2, id, 200, 100, 0) == -1, "the one closest to expiry was forgotten, the table is full again");
        id[0] = 1;
        CHECK(used_mark(t, 2, id, 300, 100, 0) == 0, "the others are kept");
    }
    for (i = 0; i < CM_OAUTH_KEY_CHECKS; i++)
        CHECK(rate_take("192.0.2.1", 1000) == 0, "check %u allowed", (unsigned)i);
    CHECK(rate_take("192.0.2.1", 2000) < 0 && rate_take("192.0.2.2", 2000) == 0, "the limit is per address");
    CHECK(rate_take("192.0.2.1", 1000 + CM_OAUTH_RATE_WINDOW_MS) == 0, "a new window");
}

/* Every catalog entry parses within SCHEMA_TOKENS (else its arguments would go unchecked) */
static void test_schema_tokens(void)
{
    size_t i;
    for (i = 0; i < N_TOOLS; i++) {
        struct jdoc sd;
        CHECK(parse_schema(&tools[i], &sd) >= 0, "%s: its entry needs more than %d tokens (SCHEMA_TOKENS)",
              tools[i].name, SCHEMA_TOKENS);
    }
}

/* mk/pem2c.py's table against the server's own loader reading the same bundle */
static void test_builtin_anchors(void)
{
#ifdef CM_BUILTIN_ANCHORS
    char err[400];
    size_t i, same = 0;
    CHECK(up_load_anchors(CM_BUILTIN_ANCHORS_SOURCE, err, sizeof err) == 0, "load %s: %s", CM_BUILTIN_ANCHORS_SOURCE,
          err);
    CHECK(up.n_anchors == CM_BUILTIN_ANCHORS, "%lu anchors loaded, %lu compiled in", (unsigned long)up.n_anchors,
          (unsigned long)CM_BUILTIN_ANCHORS);
    for (i = 0; i < up.n_anchors && i < CM_BUILTIN_ANCHORS; i++) {
        const br_x509_trust_anchor *a = &up.anchors[i], *b = &cm_builtin_anchors[i];
        int ok = a->dn.len == b->dn.len && memcmp(a->dn.data, b->dn.data, a->dn.len) == 0 && a->flags == b->flags &&
                 a->pkey.key_type == b->pkey.key_type;
        if (ok && a->pkey.key_type == BR_KEYTYPE_RSA)
            ok = a->pkey.key.rsa.nlen == b->pkey.key.rsa.nlen && a->pkey.key.rsa.elen == b->pkey.key.rsa.elen &&
                 memcmp(a->pkey.key.rsa.n, b->pkey.key.rsa.n, a->pkey.key.rsa.nlen) == 0 &&
                 memcmp(a->pkey.key.rsa.e, b->pkey.key.rsa.e, a->pkey.key.rsa.elen) == 0;
        else if (ok)
            ok = a->pkey.key.ec.curve == b->pkey.key.ec.curve && a->pkey.key.ec.qlen == b->pkey.key.ec.qlen &&
                 memcmp(a->pkey.key.ec.q, b->pkey.key.ec.q, a->pkey.key.ec.qlen) == 0;
        CHECK(ok, "anchor %lu differs between mk/pem2c.py and the loader", (unsigned long)i);
        same += ok;
    }
    printf("builtin anchors: %lu of %lu the same as loaded from %s\n", (unsigned long)same,
           (unsigned long)CM_BUILTIN_ANCHORS, CM_BUILTIN_ANCHORS_SOURCE);
    CHECK(up_choose_anchors(NULL, err, sizeof err) == 0 && up.trusted == cm_builtin_anchors,
          "no --ca-file: the compiled-in anchors");
    CHECK(up_choose_anchors(CM_BUILTIN_ANCHORS_SOURCE, err, sizeof err) == 0 && up.trusted == up.anchors,
          "--ca-file still wins");
#else
    printf("skip: builtin anchors (built without -DCM_TRUST_ANCHORS_H)\n");
#endif
}

static void set_peer(unsigned char *p, int a, int b)
{
    memset(p, 0, 16);
    p[10] = p[11] = 0xff;
    p[12] = 127;
    p[14] = (unsigned char)a;
    p[15] = (unsigned char)b;
}

static void test_admission(void)
{
    unsigned char a[16], b[16];
    int k, v;
    set_peer(a, 0, 1);
    set_peer(b, 0, 1);
    CHECK(same_client(a, b), "same IPv4 address");
    b[15] = 2;
    CHECK(!same_client(a, b), "another IPv4 address");
    memset(a, 0, 16);
    memset(b, 0, 16);
    a[0] = b[0] = 0x20;
    a[1] = b[1] = 0x01;
    a[15] = 1;
    b[15] = 2;
    CHECK(same_client(a, b), "one IPv6 /64");
    b[7] = 1;
    CHECK(!same_client(a, b), "another IPv6 /64");
    set_peer(b, 0, 1);
    memset(a, 0, 16);
    CHECK(!same_client(a, b), "an IPv6 address is not an IPv4 one");
    /* a table: 8 stalled half-requests from .2, 7 from .3, one idle client on .1 */
    memset(conns, 0, sizeof conns);
    for (k = 0; k < CM_MAX_CONNS; k++) {
        conns[k].state = C_READ;
        conns[k].served = 1;
        conns[k].in_len = k < 15 ? 20 : 0;
        conns[k].req_start_ms = 1000 + (uint64_t)k;
        conns[k].last_ms = 1000 + (uint64_t)k;
        set_peer(conns[k].peer, 0, k < 8 ? 2 : k < 15 ? 3 : 1);
    }
    set_peer(a, 0, 9);
    CHECK(pick_victim(a, 0, 1500) < 0, "nothing is stalled before the grace");
    v = pick_victim(a, 0, 1000 + CM_SLOW_GRACE_MS + 100);
    CHECK(v == 0, "past the grace: the oldest stalled one of the heaviest address (%d)", v);
    set_peer(a, 0, 3);
    CHECK(pick_victim(a, 0, 1000 + CM_SLOW_GRACE_MS + 100) < 0, "a heavy address takes no slot from another as heavy");
    CHECK(pick_victim(a, 1, 1000 + CM_SLOW_GRACE_MS + 100) == 8, "an address at its limit replaces its own");
    for (k = 0; k < 15; k++)
        conns[k].state = C_WAIT_API; /* all busy but the idle one */
    set_peer(a, 0, 9);
    conns[9].state = C_WRITE;        /* ... and one answer not being read since 1009 */
    CHECK(pick_victim(a, 0, 1000 + CM_SLOW_GRACE_MS + 100) == 9, "an answer without write progress is stalled");
    conns[9].last_ms = 1000 + CM_SLOW_GRACE_MS;
    CHECK(pick_victim(a, 0, 1000 + CM_SLOW_GRACE_MS + 100) == 15, "an answer still moving is not (the idle one goes)");
    conns[9].state = C_WAIT_API;
    set_peer(a, 0, 9);
    CHECK(pick_victim(a, 0, 1000 + CM_EVICT_IDLE_MS + 100) == 15, "a newcomer holding none may ask an idle one to leave");
    set_peer(a, 0, 2);
    CHECK(pick_victim(a, 0, 1000 + CM_EVICT_IDLE_MS + 100) < 0, "a heavy address does not push an idle light one off");
    memset(conns, 0, sizeof conns);
}

static void test_selection_and_features(void)
{
    unsigned mask;
    char err[200], out[64];
    struct view q = {"a=1&toolsets=bookings,slots&b=2", 31}, v;
    static const char answer[] = "{\"data\":[{\"slug\":\"intro-call\",\"title\":\"\\\"slug\\\": x\"},"
                                 "{\"title\":\"slug\",\"slug\" : \"demo\"},{\"slug\":\"intro-call\"},"
                                 "{\"slug\":\"a\\\"b\"},{\"slug\":5}]}";
    size_t n;
    struct cm_tool t = {"x", "GET", "/user/profile", 0, 0, 0, 0, 0};
    CHECK(parse_toolsets("bookings,slots", 14, &mask, err, sizeof err) == 0 && mask == (TS_BOOKINGS | TS_SLOTS), "two toolsets");
    CHECK(parse_toolsets("teams%2Cusers", 13, &mask, err, sizeof err) == 0 && mask == (TS_TEAMS | TS_USERS), "%%2C is a comma");
    CHECK(parse_toolsets("all", 3, &mask, err, sizeof err) == 0 && mask == TS_ALL, "all");
    CHECK(parse_toolsets("bookings,", 9, &mask, err, sizeof err) < 0 && strstr(err, "''"), "an empty name is refused");
    CHECK(parse_toolsets("Bookings", 8, &mask, err, sizeof err) < 0 && strstr(err, "'Bookings'"), "names are lower case");
    v = query_param(q, "toolsets");
    CHECK(v.p && v.n == 14 && memcmp(v.p, "bookings,slots", 14) == 0, "query parameter");
    CHECK(!query_param(q, "toolset").p && !query_param(q, "b=").p, "only whole names match");
    CHECK(tool_toolset(&t) == TS_USERS, "/user is users");
    t.path = "/usersx";
    CHECK(tool_toolset(&t) == 0, "a path segment matches whole");
    n = collect_slugs(answer, sizeof answer - 1, out, sizeof out);
    CHECK(n == strlen("intro-call") + 1 + strlen("demo") + 1 && strcmp(out, "intro-call") == 0 && strcmp(out + 11, "demo") == 0,
          "slugs: keys only, once each, none with escapes or of another type (%lu bytes)", (unsigned long)n);
    n = collect_slugs(answer, sizeof answer - 1, out, 12);
    CHECK(n == 11, "slugs stop at the buffer's end");
}

int main(void)
{
    cm_config_defaults(&cfg);
    cfg.log_level = CM_LOG_ERROR;
    cm_port_random(server_secret, sizeof server_secret);
    test_http_parser();
    test_chunked();
    test_json_check();
    test_json_split();
    test_message_rules();
    test_strings();
    test_dispatch();
    test_routes();
    test_sessions();
    test_builtin_anchors();
    test_schema_tokens();
    test_admission();
    test_ended_churn();
    test_operations();
    test_oauth();
    test_selection_and_features();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
