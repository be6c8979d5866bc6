"""EC2 and VPC: instances (metadata options), security groups (ingress expanded to port ranges and
sources), network ACLs, EBS volumes (and whether any snapshot of them exists), snapshots and default
encryption, owned AMIs, VPC flow logs and endpoints, and subnets (whether instances launched there get a
public IP without asking, and whether their route table leads to an internet gateway)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudward.conformity.aws.collectors._base import Context, tag_map
from cloudward.conformity.aws.model import Resource

WORLD = ("0.0.0.0/0", "::/0")

# Ports worth naming when they are open to the world: the services crews such as TeamTNT scan for,
# remote administration and databases.
WATCHED_PORTS: dict[int, str] = {
    20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 135: "msrpc", 139: "netbios", 445: "smb",
    1433: "mssql", 1521: "oracle", 2375: "docker", 2376: "docker-tls", 2379: "etcd", 2380: "etcd-peer",
    3306: "mysql", 3389: "rdp", 4040: "weave-scope", 4243: "docker-alt", 5432: "postgresql", 5601: "kibana",
    5900: "vnc", 5984: "couchdb", 6379: "redis", 6443: "kubernetes-api", 8500: "consul", 8888: "jupyter",
    9042: "cassandra", 9200: "elasticsearch", 9300: "elasticsearch-transport", 10250: "kubelet",
    10255: "kubelet-readonly", 11211: "memcached", 27017: "mongodb", 50070: "hadoop",
}


def _ranges(perm: dict[str, Any]) -> tuple[str, int, int]:
    proto = str(perm.get("IpProtocol", "-1"))
    if proto in ("-1", "all"):
        return "all", 0, 65535
    if proto in ("6", "tcp"):
        proto = "tcp"
    elif proto in ("17", "udp"):
        proto = "udp"
    low = perm.get("FromPort")
    high = perm.get("ToPort")
    if proto in ("tcp", "udp"):
        low = 0 if low in (None, -1) else int(low)
        high = 65535 if high in (None, -1) else int(high)
        return proto, low, high
    return proto, -1, -1  # icmp and others: ports do not apply


def expand_permissions(perms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (protocol, port range, source)."""
    out = []
    for perm in perms or []:
        proto, low, high = _ranges(perm)
        sources = [r.get("CidrIp") for r in perm.get("IpRanges", [])]
        sources += [r.get("CidrIpv6") for r in perm.get("Ipv6Ranges", [])]
        sources += [f"sg:{p.get('GroupId')}" for p in perm.get("UserIdGroupPairs", [])]
        sources += [f"pl:{p.get('PrefixListId')}" for p in perm.get("PrefixListIds", [])]
        for source in sources:
            if source:
                out.append({"protocol": proto, "from": low, "to": high, "source": str(source)})
    return out


def world_facts(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the world (0.0.0.0/0 or ::/0) can reach over TCP: named ports and whether it is everything."""
    world = [e for e in entries if e["source"] in WORLD]
    tcp = [e for e in world if e["protocol"] in ("tcp", "all")]
    ports = sorted(p for p in WATCHED_PORTS if any(e["from"] <= p <= e["to"] for e in tcp))
    covered: set[tuple[int, int]] = {(e["from"], e["to"]) for e in tcp}
    everything = any(e["protocol"] == "all" for e in world) or any(lo <= 1 and hi >= 65535 for lo, hi in covered)
    count = 65536 if everything else sum(hi - lo + 1 for lo, hi in _merge(covered))
    return {
        "world_open": bool(world),
        "world_open_ports": ports,
        "world_open_services": [WATCHED_PORTS[p] for p in ports],
        "world_open_all_ports": everything,
        "world_open_port_count": count,
        "world_open_ranges": sorted({f"{e['protocol']}:{e['from']}-{e['to']} from {e['source']}" for e in world}),
        "world_open_ipv6": any(e["source"] == "::/0" for e in world),
    }


def _merge(ranges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def nacl_world_open(entries: list[dict[str, Any]], port: int) -> bool:
    """Would a TCP packet from the world to `port` be allowed in? Rules are applied in number order;
    the first that matches a world source decides."""
    inbound = sorted((e for e in entries if not e.get("Egress")), key=lambda e: int(e.get("RuleNumber", 32767)))
    for entry in inbound:
        cidr = entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")
        if cidr not in WORLD:
            continue
        proto = str(entry.get("Protocol", "-1"))
        if proto not in ("-1", "6"):
            continue
        span = entry.get("PortRange") or {}
        low, high = int(span.get("From", 0)), int(span.get("To", 65535))
        if proto == "-1" or low <= port <= high:
            return entry.get("RuleAction") == "allow"
    return False


def collect(ctx: Context) -> None:
    ec2 = ctx.client("ec2")
    region = ctx.region

    enis = ctx.pages(ec2, "describe_network_interfaces", "NetworkInterfaces")
    sg_users: dict[str, int] = {}
    vpc_users: dict[str, int] = {}
    for eni in enis:
        for group in eni.get("Groups", []):
            sg_users[group.get("GroupId", "")] = sg_users.get(group.get("GroupId", ""), 0) + 1
        vpc_users[eni.get("VpcId", "")] = vpc_users.get(eni.get("VpcId", ""), 0) + 1

    for group in ctx.pages(ec2, "describe_security_groups", "SecurityGroups"):
        gid = str(group["GroupId"])
        ingress = expand_permissions(group.get("IpPermissions", []))
        egress = expand_permissions(group.get("IpPermissionsEgress", []))
        ctx.add("security_group", gid, ctx.arn("ec2", f"security-group/{gid}"),
                name=group.get("GroupName", ""), vpc_id=group.get("VpcId", ""),
                is_default=group.get("GroupName") == "default", ingress=ingress,
                ingress_rule_count=len(ingress), egress_rule_count=len(egress),
                attached_interfaces=sg_users.get(gid, 0), in_use=sg_users.get(gid, 0) > 0,
                **world_facts(ingress))

    for reservation in ctx.pages(ec2, "describe_instances", "Reservations"):
        for inst in reservation.get("Instances", []):
            iid = str(inst["InstanceId"])
            meta = inst.get("MetadataOptions") or {}
            endpoint = meta.get("HttpEndpoint", "enabled")
            tokens = meta.get("HttpTokens", "optional")
            profile = (inst.get("IamInstanceProfile") or {}).get("Arn", "")
            state = (inst.get("State") or {}).get("Name", "")
            ctx.add("instance", iid, ctx.arn("ec2", f"instance/{iid}"),
                    state=state, running=state == "running",
                    http_endpoint=endpoint, http_tokens=tokens,
                    imdsv1_allowed=endpoint == "enabled" and tokens != "required",
                    metadata_hop_limit=int(meta.get("HttpPutResponseHopLimit", 1) or 1),
                    metadata_tags=meta.get("InstanceMetadataTags", "disabled"),
                    public_ip=inst.get("PublicIpAddress", ""), has_public_ip=bool(inst.get("PublicIpAddress")),
                    instance_profile_arn=profile, has_instance_profile=bool(profile),
                    security_group_ids=[g.get("GroupId") for g in inst.get("SecurityGroups", [])],
                    image_id=inst.get("ImageId", ""), vpc_id=inst.get("VpcId", ""),
                    subnet_id=inst.get("SubnetId", ""),
                    detailed_monitoring=(inst.get("Monitoring") or {}).get("State") == "enabled",
                    volume_ids=[(b.get("Ebs") or {}).get("VolumeId") for b in inst.get("BlockDeviceMappings", [])])

    volumes: dict[str, Resource] = {}
    for volume in ctx.pages(ec2, "describe_volumes", "Volumes"):
        vid = str(volume["VolumeId"])
        volumes[vid] = ctx.add("volume", vid, ctx.arn("ec2", f"volume/{vid}"), encrypted=bool(volume.get("Encrypted")),
                               state=volume.get("State", ""), attached=bool(volume.get("Attachments")),
                               size_gib=volume.get("Size"), customer_key=bool(volume.get("KmsKeyId")),
                               tags=tag_map(volume.get("Tags")), has_snapshot=False)

    for snap in ctx.pages(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"]):
        sid = str(snap["SnapshotId"])
        if str(snap.get("VolumeId", "")) in volumes:
            volumes[str(snap["VolumeId"])].facts["has_snapshot"] = True
        res = ctx.add("snapshot", sid, ctx.arn("ec2", f"snapshot/{sid}", region=region),
                      encrypted=bool(snap.get("Encrypted")), volume_id=snap.get("VolumeId", ""))

        def permissions(sid: str = sid) -> Any:
            return ctx.call(ec2, "describe_snapshot_attribute", SnapshotId=sid, Attribute="createVolumePermission")

        attr = ctx.guarded(res.path, permissions, None)
        if attr is not None:
            perms = attr.get("CreateVolumePermissions", [])
            res.facts["public"] = any(p.get("Group") == "all" for p in perms)
            res.facts["shared_with_accounts"] = sorted(str(p["UserId"]) for p in perms if p.get("UserId"))

    images = ctx.call(ec2, "describe_images", Owners=["self"]) or {}
    for image in images.get("Images", []):
        aid = str(image["ImageId"])
        ctx.add("ami", aid, ctx.arn("ec2", f"image/{aid}"), public=bool(image.get("Public")),
                name=image.get("Name", ""))

    default = ctx.call(ec2, "get_ebs_encryption_by_default") or {}
    ctx.add("ebs_defaults", ctx.account, "", encryption_by_default=bool(default.get("EbsEncryptionByDefault")))

    flows = ctx.pages(ec2, "describe_flow_logs", "FlowLogs")
    logged = {f.get("ResourceId") for f in flows if f.get("FlowLogStatus", "ACTIVE") == "ACTIVE"}
    endpoints: dict[str, list[str]] = {}
    for endpoint in ctx.pages(ec2, "describe_vpc_endpoints", "VpcEndpoints"):
        if str(endpoint.get("State", "available")).lower() in ("available", "pending", "pendingacceptance"):
            endpoints.setdefault(str(endpoint.get("VpcId", "")), []).append(str(endpoint.get("ServiceName", "")))
    public_subnets = _public_subnets(ctx.pages(ec2, "describe_route_tables", "RouteTables"))
    subnets = ctx.pages(ec2, "describe_subnets", "Subnets")
    for vpc in ctx.pages(ec2, "describe_vpcs", "Vpcs"):
        vid = str(vpc["VpcId"])
        mine = [s for s in subnets if s.get("VpcId") == vid]
        public = [str(s["SubnetId"]) for s in mine if public_subnets(vid, str(s["SubnetId"]))]
        services = sorted(endpoints.get(vid, []))
        ctx.add("vpc", vid, ctx.arn("ec2", f"vpc/{vid}"), is_default=bool(vpc.get("IsDefault")),
                flow_logs_enabled=vid in logged, interfaces=vpc_users.get(vid, 0),
                in_use=vpc_users.get(vid, 0) > 0, cidr=vpc.get("CidrBlock", ""),
                endpoint_services=services, ec2_endpoint=any(s.rsplit(".", 1)[-1] == "ec2" for s in services),
                subnet_count=len(mine), public_subnet_count=len(public),
                private_subnet_count=len(mine) - len(public))

    for subnet in subnets:
        sid = str(subnet["SubnetId"])
        ctx.add("subnet", sid, str(subnet.get("SubnetArn") or ctx.arn("ec2", f"subnet/{sid}")),
                vpc_id=subnet.get("VpcId", ""), cidr=subnet.get("CidrBlock", ""),
                default_for_az=bool(subnet.get("DefaultForAz")),
                auto_public_ip=bool(subnet.get("MapPublicIpOnLaunch")),
                auto_ipv6=bool(subnet.get("AssignIpv6AddressOnCreation")),
                routes_to_internet=public_subnets(str(subnet.get("VpcId", "")), sid))

    for acl in ctx.pages(ec2, "describe_network_acls", "NetworkAcls"):
        aid = str(acl["NetworkAclId"])
        entries = acl.get("Entries", [])
        open_ports = [p for p in (22, 3389) if nacl_world_open(entries, p)]
        ctx.add("network_acl", aid, ctx.arn("ec2", f"network-acl/{aid}"), vpc_id=acl.get("VpcId", ""),
                is_default=bool(acl.get("IsDefault")), world_open_admin_ports=open_ports,
                world_open_all_traffic=nacl_world_open_all(entries),
                associated_subnets=len(acl.get("Associations") or []))


def _public_subnets(tables: list[dict[str, Any]]) -> Callable[[str, str], bool]:
    """Whether a subnet's route table (its own association, else its VPC's main table) sends
    0.0.0.0/0 or ::/0 to an internet gateway: what makes a subnet public."""
    explicit: dict[str, bool] = {}
    main: dict[str, bool] = {}
    for table in tables:
        to_igw = any(str(r.get("GatewayId", "")).startswith("igw-") and
                     (r.get("DestinationCidrBlock") in WORLD or r.get("DestinationIpv6CidrBlock") in WORLD)
                     for r in table.get("Routes") or [])
        for assoc in table.get("Associations") or []:
            if assoc.get("SubnetId"):
                explicit[str(assoc["SubnetId"])] = to_igw
            elif assoc.get("Main"):
                main[str(table.get("VpcId", ""))] = to_igw
    return lambda vpc_id, subnet_id: explicit.get(subnet_id, main.get(vpc_id, False))


def nacl_world_open_all(entries: list[dict[str, Any]]) -> bool:
    """Does the ACL let every protocol and port in from the world? The first all-protocol rule (in
    number order) with a world source decides, as AWS applies them."""
    inbound = sorted((e for e in entries if not e.get("Egress")), key=lambda e: int(e.get("RuleNumber", 32767)))
    for entry in inbound:
        if (entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")) in WORLD and str(entry.get("Protocol")) == "-1":
            return entry.get("RuleAction") == "allow"
    return False
