// Web shells: server-side scripts that execute what the HTTP request carries.
// Written for cloudward (own wording); the patterns are the behaviour, not any one sample.
// Findings are made by the content rules in cloudward/data/rules/content.yaml.

rule php_request_eval_webshell : webshell php
{
    meta:
        description = "PHP that passes request input (GET/POST/REQUEST/COOKIE, or its base64 decoding) to eval/assert/system/exec/passthru/shell_exec/popen"
        severity = "critical"
        attack = "T1505.003"
    strings:
        $php = "<?" ascii
        $direct = /\b(eval|assert|system|exec|passthru|shell_exec|popen|proc_open)\s*\(\s*(base64_decode\s*\(\s*|stripslashes\s*\(\s*|gzinflate\s*\(\s*|str_rot13\s*\(\s*)*\$_(GET|POST|REQUEST|COOKIE|SERVER\s*\[\s*['"]HTTP_)/ ascii nocase
        $backtick = /`\s*\$_(GET|POST|REQUEST)\s*\[/ ascii
    condition:
        filesize < 1MB and $php and ($direct or $backtick)
}

rule jsp_runtime_exec_webshell : webshell jsp
{
    meta:
        description = "JSP that runs Runtime.exec or ProcessBuilder on a request parameter"
        severity = "critical"
        attack = "T1505.003"
    strings:
        $jsp = "<%" ascii
        $exec = /Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(\s*request\s*\.\s*getParameter/ ascii
        $pb = /new\s+ProcessBuilder\s*\([^)]{0,80}request\s*\.\s*getParameter/ ascii
    condition:
        filesize < 1MB and $jsp and ($exec or $pb)
}

rule aspx_process_webshell : webshell aspx
{
    meta:
        description = "ASP.NET page that starts cmd.exe/powershell with arguments taken from the request"
        severity = "critical"
        attack = "T1505.003"
    strings:
        $page = /<%@\s*Page/ ascii nocase
        $start = /Process\s*\.\s*Start|ProcessStartInfo/ ascii
        $shell = /(cmd\.exe|powershell)/ ascii nocase
        $req = /Request\s*(\.\s*(QueryString|Form|Params))?\s*\[/ ascii
    condition:
        filesize < 1MB and $page and $start and $shell and $req
}
