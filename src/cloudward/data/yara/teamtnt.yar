// Shell tooling of cloud-mining crews in the TeamTNT style: droppers that clear the field (kill
// competing miners, remove cloud security agents), plant SSH keys and download with fallbacks.
// Written for cloudward (own wording); strings are behaviours described in public reports.

rule competing_miner_killer : dropper teamtnt
{
    meta:
        description = "script that kills other miners by name (kinsing, kdevtmpfsi, xmrig ...) before starting its own"
        severity = "high"
        attack = "T1489"
    strings:
        $kill1 = /(pkill|killall)\s+(-9\s+)?(-f\s+)?["']?[A-Za-z0-9_.\-\/|\\]*(kinsing|kdevtmpfsi|xmrig|kthreaddi|dbused|sysupdate|networkservice|minerd|cryptonight)/ ascii nocase
        $kill2 = /ps\s+[a-z-]+\s*\|\s*grep\s+[^\n]{0,80}(kinsing|kdevtmpfsi|xmrig|kthreaddi|dbused|minerd|cryptonight)[^\n]{0,120}kill/ ascii nocase
        $kill3 = /(kill|rm)\s+-(9|rf|f)\s+[^\n]{0,40}(kinsing|kdevtmpfsi|kthreaddi|dbused)/ ascii nocase
        $shell = /^#!\s*\/(usr\/)?bin\/(env\s+)?(ba|da|z)?sh/ ascii
    condition:
        filesize < 2MB and (#kill1 + #kill2 + #kill3 >= 2) and ($shell or #kill1 >= 3)
}

rule cloud_agent_uninstaller : dropper teamtnt defense_evasion
{
    meta:
        description = "script that stops or uninstalls cloud provider security/monitoring agents (Alibaba Aegis, Tencent YunJing/stargate, BMC-style monitors)"
        severity = "high"
        attack = "T1562.001"
    strings:
        $a1 = "aliyun.sh" ascii nocase
        $a2 = "/usr/local/aegis" ascii nocase
        $a3 = "AliYunDun" ascii nocase
        $a4 = "aegis_uninstall" ascii nocase
        $a5 = "quartz_uninstall" ascii nocase
        $a6 = "aliyun-service" ascii nocase
        $a7 = "cloudmonitor" ascii nocase
        $t1 = "/usr/local/qcloud/stargate" ascii nocase
        $t2 = "/usr/local/qcloud/YunJing" ascii nocase
        $t3 = "YDService" ascii
        $t4 = "/usr/local/qcloud/monitor" ascii nocase
        $h1 = "/usr/local/hostguard" ascii nocase
        $b1 = "bcm-agent" ascii nocase
        $b2 = /systemctl\s+(stop|disable|mask)\s+(aliyun|aegis|amazon-ssm-agent|amazon-cloudwatch-agent|hostguard|tat_agent)/ ascii nocase
        $do1 = "uninstall" ascii nocase
        $do2 = /rm\s+-[a-z]*r[a-z]*f?\s/ ascii
        $do3 = /(pkill|killall|kill\s+-9)/ ascii
    condition:
        filesize < 2MB and 2 of ($a*, $t*, $h*, $b*) and 1 of ($do*)
}

rule teamtnt_style_dropper : dropper teamtnt persistence
{
    meta:
        description = "dropper script: removes immutable flags, writes authorized_keys, downloads with curl/wget fallbacks"
        severity = "high"
        attack = "T1098.004"
    strings:
        $chattr = /chattr\s+-[ia]+\s/ ascii
        $keys = "authorized_keys" ascii
        $fn = /(__curl|__wget)\s*\(\s*\)/ ascii
        $dl2 = /curl\s[^\n]{0,200}\|\|\s*wget\s/ ascii
        $dl3 = /(curl|wget)\s[^\n]{0,200}\|\s*(ba)?sh/ ascii
        $dl4 = "/dev/tcp/" ascii
        $hist = /(history\s+-c|HISTFILE=\/dev\/null|unset\s+HISTFILE)/ ascii
    condition:
        filesize < 2MB and $chattr and $keys and ($fn or 1 of ($dl*)) and (#chattr >= 2 or $hist or $fn)
}

rule teamtnt_signature_strings : teamtnt
{
    meta:
        description = "strings the TeamTNT crew left in its tools: the kill-switch host name, the author tag, the renamed chattr"
        severity = "critical"
        attack = "T1105"
    strings:
        $killswitch = "HaXXoRsMoPPeD" ascii
        $author = "hilde@teamtnt.red" ascii nocase
        $renamed_chattr = /tntrecht\s+[-+][ia]/ ascii
    condition:
        any of them
}
