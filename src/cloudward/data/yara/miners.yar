// Cryptocurrency miners: XMRig-style binaries and configs, stratum pool URLs, Monero wallets.
// Written for cloudward (own wording). Each rule: description, severity hint, ATT&CK id.
// Findings are made by the host rules in workload/rules/hunt-artifacts.yaml and by image scans.

rule xmrig_config : miner config
{
    meta:
        description = "JSON miner configuration in the XMRig format (donate-level, pools, randomx/cpu blocks)"
        severity = "high"
        attack = "T1496"
    strings:
        $donate = "\"donate-level\"" ascii
        $pools = "\"pools\"" ascii
        $randomx = "\"randomx\"" ascii
        $cpu = /"cpu"\s*:\s*\{/ ascii
        $url = /"url"\s*:\s*"[^"]{3,200}"/ ascii
        $user = "\"user\"" ascii
        $algo = /"(algo|coin)"\s*:/ ascii
    condition:
        filesize < 2MB and $pools and $url and ($donate or $randomx) and 2 of ($cpu, $user, $algo, $randomx, $donate)
}

rule xmrig_binary : miner binary
{
    meta:
        description = "ELF executable carrying XMRig's own strings (name, options, RandomX/CryptoNight code)"
        severity = "critical"
        attack = "T1496"
    strings:
        $name1 = "xmrig" ascii nocase fullword
        $name2 = "XMRig/%s" ascii
        $opt1 = "--donate-level" ascii
        $opt2 = "donate.v2.xmrig.com" ascii
        $algo1 = "randomx" ascii nocase
        $algo2 = "cryptonight" ascii nocase
        $proto = "stratum+tcp://" ascii
        $proto2 = "mining.subscribe" ascii
    condition:
        uint32(0) == 0x464c457f and 1 of ($name*) and 1 of ($opt*) and 1 of ($algo*, $proto*)
}

rule miner_binary_generic : miner binary
{
    meta:
        description = "ELF executable that speaks stratum and carries a proof-of-work algorithm name (a coin miner)"
        severity = "high"
        attack = "T1496"
    strings:
        $s1 = "stratum+tcp://" ascii
        $s2 = "stratum+ssl://" ascii
        $s3 = "mining.subscribe" ascii
        $s4 = "mining.submit" ascii
        $a1 = "cryptonight" ascii nocase
        $a2 = "randomx" ascii nocase
        $a3 = "argon2" ascii nocase
        $a4 = "kawpow" ascii nocase
        $a5 = "ethash" ascii nocase
    condition:
        uint32(0) == 0x464c457f and 2 of ($s*) and 1 of ($a*)
}

rule stratum_pool_url : miner network
{
    meta:
        description = "a stratum mining-pool URL with host and port (stratum+tcp://, stratum+ssl://, stratum2+tcp://)"
        severity = "medium"
        attack = "T1496"
    strings:
        $url = /stratum2?\+(tcp|ssl|tls):\/\/[A-Za-z0-9_.\-]{3,253}:[0-9]{2,5}/ ascii nocase
    condition:
        $url
}

rule monero_wallet : miner wallet
{
    meta:
        description = "a Monero wallet address (95 base58 characters starting with 4 or 8)"
        severity = "medium"
        attack = "T1496"
    strings:
        $addr = /[^1-9A-HJ-NP-Za-km-z][48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}[^1-9A-HJ-NP-Za-km-z]/ ascii
        $addr_start = /^[48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}([^1-9A-HJ-NP-Za-km-z]|$)/ ascii
        $addr_end = /[^1-9A-HJ-NP-Za-km-z][48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}$/ ascii
    condition:
        any of them
}
