// Attacker tooling found on compromised cloud hosts: credential stealers, IRC bots, tmate
// sessions, internet scanners. Written for cloudward (own wording).

rule credential_stealer_script : credential_access exfiltration
{
    meta:
        description = "script that collects cloud credentials (AWS/Docker/Kubernetes files or the instance metadata service) and sends them out"
        severity = "high"
        attack = "T1552.001"
    strings:
        $f1 = ".aws/credentials" ascii
        $f2 = ".docker/config.json" ascii
        $f3 = ".kube/config" ascii
        $f4 = ".aws/config" ascii
        $f5 = /\/proc\/[^\s\/]{1,10}\/environ/ ascii
        $imds = /169\.254\.169\.254\/(latest|computeMetadata|metadata)\/[^\s"']{0,80}(security-credentials|service-accounts|identity|token)/ ascii
        $x1 = /curl\s[^\n]{0,200}(-F\s|--form\s|--data|-d\s*@|-T\s|--upload-file|-X\s*POST)/ ascii
        $x2 = /wget\s[^\n]{0,200}--post-(file|data)/ ascii
        $x3 = /(requests\.post|urllib\.request\.urlopen\([^\n]{0,120}data=)/ ascii
        $x4 = /(nc|ncat|netcat)\s+[^\n]{0,60}\s[0-9]{2,5}\s*<\s/ ascii
        $x5 = /tar\s+[^\n]{0,40}c[^\n]{0,200}(\.aws|\.docker|\.kube)/ ascii
    condition:
        filesize < 2MB and (2 of ($f*) or $imds) and 1 of ($x*)
}

rule irc_bot_kaiten : backdoor irc c2
{
    meta:
        description = "IRC bot in the Kaiten/Tsunami family: IRC protocol format strings plus flood and shell commands"
        severity = "critical"
        attack = "T1071"
    strings:
        $irc1 = "NOTICE %s :" ascii
        $irc2 = "PRIVMSG %s :" ascii
        $irc3 = "NICK %s" ascii
        $irc4 = "JOIN %s" ascii
        $irc5 = "USER %s" ascii
        $cmd1 = "TSUNAMI" ascii fullword
        $cmd2 = "PAN" ascii fullword
        $cmd3 = "UNKNOWN" ascii fullword
        $cmd4 = "KILLALL" ascii fullword
        $cmd5 = "GETSPOOFS" ascii fullword
        $cmd6 = "SPOOFS" ascii fullword
        $cmd7 = "DISABLE" ascii fullword
        $cmd8 = "NICK" ascii fullword
        $cmd9 = "UDPFLOOD" ascii nocase
    condition:
        filesize < 8MB and 3 of ($irc*) and 3 of ($cmd*)
}

rule tmate_session_script : remote_access c2
{
    meta:
        description = "script that starts a detached tmate session and reads its SSH/web join string (hands-on remote access)"
        severity = "high"
        attack = "T1219"
    strings:
        $bin = "tmate" ascii fullword
        $sock = /tmate\s+-S\s+\S+/ ascii
        $detached = "new-session -d" ascii
        $join1 = "#{tmate_ssh}" ascii
        $join2 = "#{tmate_web}" ascii
        $wait = "tmate-ready" ascii
    condition:
        filesize < 1MB and uint32(0) != 0x464c457f and $bin and ($sock or $detached) and 1 of ($join*, $wait)
}

rule network_scanner_binary : scanner recon
{
    meta:
        description = "ELF internet scanner (masscan, zmap, zgrab, pnscan) as dropped by cloud-mining worms to find their next targets"
        severity = "medium"
        attack = "T1046"
    strings:
        $m1 = "masscan" ascii fullword
        $m2 = "--max-rate" ascii
        $m3 = "--banners" ascii
        $m4 = "--excludefile" ascii
        $z1 = "zmap" ascii fullword
        $z2 = "--probe-module" ascii
        $z3 = "--output-module" ascii
        $g1 = "zgrab" ascii
        $g2 = "--senders" ascii
        $g3 = "zgrab2" ascii
        $p1 = "pnscan" ascii fullword
        $p2 = "Usage: %s [<options>] [{<CIDR>|<host-range} <port-range>]" ascii
    condition:
        uint32(0) == 0x464c457f and (2 of ($m*) or 2 of ($z*) or 2 of ($g*) or 1 of ($p*))
}
