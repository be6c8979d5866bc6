"""Two AWS accounts planted over HTTP in a moto server with boto3: a deliberately weak one (the failing
case of each rule moto can represent) and a hardened one (the passing cases). Accounts are separated
the way moto separates them: by assuming a role in the account's id. What moto cannot hold (SSM
managed instances, AWS Backup selections) is planted in an `OutsideMoto`, which missing_apis.py
serves. Shared by the tests and by benchmarks/conformity/prowler.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

WEAK = "111111111111"
HARDENED = "222222222222"
EMPTY = "333333333333"
REGIONS = ("us-east-1", "eu-west-1")
HOME = REGIONS[0]
SECRET_VALUE = "hunter2-planted-secret-value"
REPLICA = "hardened-replica"  # in the second region: where the hardened buckets replicate to
BUCKETS = ("hardened-data", "hardened-logs", REPLICA)  # must never appear in a report

WORLD_PORTS = (22, 2375, 2376, 2379, 6379, 10250, 3389, 6443, 4040, 4243, 27017, 9200, 5432, 3306, 1433, 1521, 11211,
               5984, 8500, 8888, 23, 445, 21, 5900, 5601, 9042, 50070, 25)


@dataclass
class OutsideMoto:
    """State for the APIs moto does not serve: account -> region -> managed instance ids, and
    account -> backup plan id -> the plan's selections (GetBackupSelection's BackupSelection plus its id)."""

    managed: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    selections: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)


def credentials(endpoint: str, account: str) -> dict[str, str]:
    import boto3

    sts = boto3.client("sts", endpoint_url=endpoint, region_name=HOME, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/setup", RoleSessionName="plant")["Credentials"]
    return {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"]}


class Clients:
    def __init__(self, endpoint: str, account: str) -> None:
        self.endpoint, self.account = endpoint, account
        self.creds = credentials(endpoint, account)

    def __call__(self, service: str, region: str = HOME) -> Any:
        import boto3
        from botocore.config import Config

        from cloudward.conformity.aws.session import keep_endpoint_host

        client = boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                              config=Config(inject_host_prefix=False), **self.creds)
        if service == "s3control":
            keep_endpoint_host(client, self.endpoint)
        return client


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return 1\n")
    return buf.getvalue()


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ADMIN_DOC = _doc({"Effect": "Allow", "Action": "*", "Resource": "*"})
EC2_TRUST = _doc({"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"})
LAMBDA_TRUST = _doc({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})


def _service_trust(service: str, account: str) -> str:
    """A service's trust limited to this account's resources (no cross-service confused deputy)."""
    return _doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole",
                 "Condition": {"StringEquals": {"aws:SourceAccount": account}}})


def _image(ec2: Any) -> str:
    mappings = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}]
    return str(ec2.register_image(Name="base", RootDeviceName="/dev/sda1", Architecture="x86_64",
                                  BlockDeviceMappings=mappings)["ImageId"])


def _profile(iam: Any, name: str, policy: str, trust: str = EC2_TRUST) -> str:
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy)
    arn = iam.create_instance_profile(InstanceProfileName=f"{name}-profile")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=f"{name}-profile", RoleName=name)
    return str(arn)


def plant_weak(endpoint: str, outside: OutsideMoto | None = None) -> None:
    outside = outside if outside is not None else OutsideMoto()
    outside.managed[WEAK] = {}  # no instance runs the SSM agent
    outside.selections[WEAK] = {}  # and no backup plan exists
    c = Clients(endpoint, WEAK)
    iam = c("iam")
    # --- IAM
    iam.create_user(UserName="admin-bob")
    iam.create_login_profile(UserName="admin-bob", Password="Sup3r-secret-pass!")
    iam.attach_user_policy(UserName="admin-bob", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    iam.create_access_key(UserName="admin-bob")
    iam.create_access_key(UserName="admin-bob")
    iam.create_user(UserName="ci-deployer")
    iam.put_user_policy(UserName="ci-deployer", PolicyName="deploy",
                        PolicyDocument=_doc({"Effect": "Allow", "Action": ["iam:PassRole", "ec2:RunInstances"],
                                             "Resource": "*"}))
    full = iam.create_policy(PolicyName="full-admin", PolicyDocument=ADMIN_DOC)["Policy"]["Arn"]
    iam.create_group(GroupName="admins")
    iam.attach_group_policy(GroupName="admins", PolicyArn=full)
    iam.add_user_to_group(GroupName="admins", UserName="ci-deployer")
    iam.create_policy(PolicyName="unused-admin", PolicyDocument=ADMIN_DOC)
    esc = iam.create_policy(PolicyName="escalator", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": ["iam:CreatePolicyVersion", "iam:PassRole"], "Resource": "*"}))["Policy"]["Arn"]
    s3all = iam.create_policy(PolicyName="s3-everything", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}))["Policy"]["Arn"]
    iam.create_role(RoleName="open-trust", AssumeRolePolicyDocument=_doc(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}))
    iam.create_role(RoleName="vendor", AssumeRolePolicyDocument=_doc(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole"}))
    iam.attach_role_policy(RoleName="vendor", PolicyArn=esc)
    iam.attach_role_policy(RoleName="vendor", PolicyArn=s3all)
    admin_profile = _profile(iam, "app-admin", ADMIN_DOC)
    iam.create_user(UserName="ops-dave")  # a console user whose MFA is an app on a phone
    iam.create_login_profile(UserName="ops-dave", Password="An0ther-secret-pass!")
    virtual = iam.create_virtual_mfa_device(VirtualMFADeviceName="ops-dave")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(UserName="ops-dave", SerialNumber=virtual, AuthenticationCode1="123456",
                          AuthenticationCode2="654321")
    iam.update_account_password_policy(MinimumPasswordLength=8, RequireSymbols=False, RequireNumbers=False,
                                       RequireUppercaseCharacters=False, RequireLowercaseCharacters=False,
                                       PasswordReusePrevention=1)

    # --- S3 (account public access block left off)
    s3 = c("s3")
    bucket = "weak-public-data"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_acl(Bucket=bucket, GrantRead="uri=http://acs.amazonaws.com/groups/global/AllUsers",
                      GrantWrite="uri=http://acs.amazonaws.com/groups/global/AllUsers")
    s3.put_bucket_policy(Bucket=bucket, Policy=_doc({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                     "Resource": f"arn:aws:s3:::{bucket}/*"}))
    s3.create_bucket(Bucket="weak-latent")
    s3.put_bucket_policy(Bucket="weak-latent", Policy=_doc({"Effect": "Allow", "Principal": "*",
                                                            "Action": "s3:GetObject",
                                                            "Resource": "arn:aws:s3:::weak-latent/*"}))
    s3.put_public_access_block(Bucket="weak-latent", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})

    # --- CloudTrail: one single-region trail, never started, writing to the public bucket
    ct = c("cloudtrail")
    ct.create_trail(Name="weak-trail", S3BucketName=bucket)
    ct.put_event_selectors(TrailName="weak-trail", EventSelectors=[{"ReadWriteType": "WriteOnly",
                                                                     "IncludeManagementEvents": True}])

    # --- KMS
    kms = c("kms")
    kms.create_key(Description="no rotation")
    kms.create_key(Description="public", Policy=_doc({"Effect": "Allow", "Principal": {"AWS": "*"},
                                                      "Action": "kms:*", "Resource": "*"}))
    doomed = kms.create_key(Description="doomed")["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)

    # --- Lambda
    lam = c("lambda")
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=LAMBDA_TRUST)["Role"]["Arn"]
    lam.create_function(FunctionName="weak-fn", Runtime="python3.7", Role=role, Handler="app.handler",
                        Code={"ZipFile": _zip()},
                        Environment={"Variables": {"DB_PASSWORD": SECRET_VALUE, "LOG_LEVEL": "debug"}})
    lam.create_function_url_config(FunctionName="weak-fn", AuthType="NONE")
    lam.add_permission(FunctionName="weak-fn", StatementId="everyone", Action="lambda:InvokeFunction",
                       Principal="*")

    # --- ECR
    ecr = c("ecr")
    ecr.create_repository(repositoryName="weak-repo")
    ecr.set_repository_policy(repositoryName="weak-repo", policyText=_doc(
        {"Sid": "pull", "Effect": "Allow", "Principal": "*", "Action": ["ecr:BatchGetImage"]}))

    # --- EKS
    eks = c("eks")
    eks.create_cluster(name="weak-cluster", roleArn=role, resourcesVpcConfig={"subnetIds": [],
                                                                              "endpointPublicAccess": True})
    eks.create_cluster(name="narrow-cluster", roleArn=role, resourcesVpcConfig={
        "subnetIds": [], "endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]},
        logging={"clusterLogging": [{"types": ["audit"], "enabled": True}]})

    # --- RDS
    rds = c("rds")
    rds.create_db_instance(DBInstanceIdentifier="weak-db", DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="app", MasterUserPassword="not-a-real-pass", AllocatedStorage=20,
                           PubliclyAccessible=True, BackupRetentionPeriod=1, AutoMinorVersionUpgrade=False)
    rds.create_db_snapshot(DBInstanceIdentifier="weak-db", DBSnapshotIdentifier="weak-snap")
    rds.modify_db_snapshot_attribute(DBSnapshotIdentifier="weak-snap", AttributeName="restore",
                                     ValuesToAdd=["all"])

    # --- per region: EC2/VPC, GuardDuty, Config
    for region in REGIONS:
        ec2 = c("ec2", region)
        image = _image(ec2)
        sg = ec2.create_security_group(GroupName="weak-open", Description="open to the world")["GroupId"]
        perms = [{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
                 for p in WORLD_PORTS]
        perms.append({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]})
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=perms)
        every = ec2.create_security_group(GroupName="weak-all", Description="everything")["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=every, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        wide = ec2.create_security_group(GroupName="weak-wide", Description="a wide range")["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=wide, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 30000, "ToPort": 32767, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SecurityGroupIds=[sg],
                          IamInstanceProfile={"Arn": admin_profile},
                          MetadataOptions={"HttpTokens": "optional", "HttpPutResponseHopLimit": 2})
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SecurityGroupIds=[every])
        ec2.modify_image_attribute(ImageId=image, LaunchPermission={"Add": [{"Group": "all"}]})
        vol = ec2.create_volume(AvailabilityZone=f"{region}a", Size=1)["VolumeId"]
        snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission", OperationType="add",
                                      GroupNames=["all"], UserIds=["999999999999"])
        if region != HOME:
            c("guardduty", region).create_detector(Enable=False)
            cfg = c("config", region)
            cfg.put_configuration_recorder(ConfigurationRecorder={
                "name": "partial", "roleARN": role,
                "recordingGroup": {"allSupported": False, "includeGlobalResourceTypes": False,
                                   "resourceTypes": ["AWS::EC2::Instance"]}})


def plant_hardened(endpoint: str, outside: OutsideMoto | None = None) -> None:
    outside = outside if outside is not None else OutsideMoto()
    c = Clients(endpoint, HARDENED)
    iam = c("iam")
    block = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
             "RestrictPublicBuckets": True}
    iam.update_account_password_policy(MinimumPasswordLength=16, RequireSymbols=True, RequireNumbers=True,
                                       RequireUppercaseCharacters=True, RequireLowercaseCharacters=True,
                                       PasswordReusePrevention=24, MaxPasswordAge=90)
    iam.create_user(UserName="alice")  # no console, no keys, permissions through a group
    iam.create_group(GroupName="readers")
    iam.attach_group_policy(GroupName="readers", PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    iam.add_user_to_group(GroupName="readers", UserName="alice")
    iam.create_user(UserName="carol")  # a console user with a hardware token
    iam.create_login_profile(UserName="carol", Password="Yet-an0ther-secret-pass!")
    iam.enable_mfa_device(UserName="carol", SerialNumber="GAHT12345678", AuthenticationCode1="123456",
                          AuthenticationCode2="654321")
    iam.add_user_to_group(GroupName="readers", UserName="carol")
    iam.create_saml_provider(Name="corp-idp", SAMLMetadataDocument="<EntityDescriptor>" + "x" * 1000 +
                             "</EntityDescriptor>")
    iam.create_role(RoleName="security-audit", AssumeRolePolicyDocument=_doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HARDENED}:root"}, "Action": "sts:AssumeRole"}))
    iam.attach_role_policy(RoleName="security-audit", PolicyArn="arn:aws:iam::aws:policy/SecurityAudit")
    scoped = iam.create_policy(PolicyName="scoped", PolicyDocument=_doc(
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::hardened-data/*"}))["Policy"]["Arn"]
    iam.create_role(RoleName="support", AssumeRolePolicyDocument=_doc(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{HARDENED}:root"}, "Action": "sts:AssumeRole"}))
    iam.attach_role_policy(RoleName="support", PolicyArn="arn:aws:iam::aws:policy/AWSSupportAccess")
    iam.create_role(RoleName="partner", AssumeRolePolicyDocument=_doc(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"sts:ExternalId": "per-customer-id"}}}))
    iam.attach_role_policy(RoleName="partner", PolicyArn=scoped)
    profile = _profile(iam, "app", _doc({"Effect": "Allow", "Action": "s3:GetObject",
                                         "Resource": "arn:aws:s3:::hardened-data/*"}),
                       trust=_service_trust("ec2.amazonaws.com", HARDENED))
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument=_service_trust("lambda.amazonaws.com",
                                                                                  HARDENED))["Role"]["Arn"]

    c("s3control").put_public_access_block(AccountId=HARDENED, PublicAccessBlockConfiguration=block)
    s3 = c("s3")
    kms = c("kms")
    key = kms.create_key(Description="logs")["KeyMetadata"]["Arn"]
    kms.enable_key_rotation(KeyId=key)
    for bucket in BUCKETS:
        if bucket == REPLICA:
            c("s3", REGIONS[1]).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True,
                                              CreateBucketConfiguration={"LocationConstraint": REGIONS[1]})
        else:
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
                                 MFA="arn:aws:iam::222222222222:mfa/root 123456")
        tls = {"Sid": "tls", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*",
               "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
               "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        # ACLs are off (bucket owner enforced): access logs are delivered under the bucket policy
        delivery = {"Sid": "access-logs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": ["s3:PutObject"], "Resource": f"arn:aws:s3:::{bucket}/*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": HARDENED}}}
        logs_here = bucket in ("hardened-logs", REPLICA)
        s3.put_bucket_policy(Bucket=bucket, Policy=_doc(tls, delivery) if logs_here else _doc(tls))
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    for bucket in BUCKETS:
        target = bucket if bucket == REPLICA else "hardened-logs"  # logs stay in the bucket's region
        s3.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": target, "TargetPrefix": f"{bucket}/" if target != bucket else "access-logs/"}})
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
             "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]})
        region = REGIONS[1] if bucket == REPLICA else HOME  # moto does not return EventBridge settings: a queue
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
            {"QueueArn": f"arn:aws:sqs:{region}:{HARDENED}:bucket-events", "Events": ["s3:ObjectCreated:*"]}]})
        if bucket != REPLICA:
            s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration={
                "Role": role, "Rules": [{"ID": "dr", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": ""},
                                         "DeleteMarkerReplication": {"Status": "Disabled"},
                                         "Destination": {"Bucket": f"arn:aws:s3:::{REPLICA}"}}]})

    ct = c("cloudtrail")
    ct.create_trail(Name="org-trail", S3BucketName="hardened-logs", IsMultiRegionTrail=True,
                    EnableLogFileValidation=True, KmsKeyId=key,
                    CloudWatchLogsLogGroupArn=f"arn:aws:logs:{HOME}:{HARDENED}:log-group:trail:*",
                    CloudWatchLogsRoleArn=role)
    ct.start_logging(Name="org-trail")
    ct.put_event_selectors(TrailName="org-trail", EventSelectors=[{
        "ReadWriteType": "All", "IncludeManagementEvents": True,
        "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]},
                          {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}]}])

    ecr = c("ecr")
    ecr.create_repository(repositoryName="good-repo", imageTagMutability="IMMUTABLE",
                          imageScanningConfiguration={"scanOnPush": True},
                          encryptionConfiguration={"encryptionType": "KMS", "kmsKey": key})
    ecr.put_lifecycle_policy(repositoryName="good-repo", lifecyclePolicyText=json.dumps({"rules": [
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                          "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]}))
    c("eks").create_cluster(name="good-cluster", version="1.31", roleArn=role, resourcesVpcConfig={
        "subnetIds": [], "endpointPublicAccess": False, "endpointPrivateAccess": True},
        logging={"clusterLogging": [{"types": ["api", "audit", "authenticator", "controllerManager", "scheduler"],
                                     "enabled": True}]},
        encryptionConfig=[{"resources": ["secrets"], "provider": {"keyArn": key}}])
    c("ecr").put_registry_scanning_configuration(scanType="ENHANCED", rules=[
        {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])
    rds = c("rds")
    rds.create_db_parameter_group(DBParameterGroupName="tls-only", DBParameterGroupFamily="postgres16",
                                  Description="clients must use TLS")
    rds.modify_db_parameter_group(DBParameterGroupName="tls-only", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "pending-reboot"}])
    rds.create_db_instance(DBInstanceIdentifier="good-db", DBInstanceClass="db.t3.micro", Engine="postgres",
                           EngineVersion="16.4", DBParameterGroupName="tls-only",
                           MasterUsername="app", MasterUserPassword="not-a-real-pass", AllocatedStorage=20,
                           PubliclyAccessible=False, StorageEncrypted=True, KmsKeyId=key, BackupRetentionPeriod=14,
                           MultiAZ=True, DeletionProtection=True, AutoMinorVersionUpgrade=True,
                           EnableIAMDatabaseAuthentication=True, CopyTagsToSnapshot=True, MonitoringInterval=60,
                           MonitoringRoleArn=role, EnableCloudwatchLogsExports=["postgresql"], Port=5433)
    topic = f"arn:aws:sns:{HOME}:{HARDENED}:db-alerts"
    for source, categories in (("db-instance", []), ("db-parameter-group", ["configuration change"]),
                               ("db-security-group", ["failure", "configuration change"])):
        rds.create_event_subscription(SubscriptionName=f"alerts-{source}", SnsTopicArn=topic, SourceType=source,
                                      EventCategories=categories, Enabled=True)

    # Organizations: this account manages one; a security account is the GuardDuty and Config admin
    org = c("organizations")
    org.create_organization(FeatureSet="ALL")
    security = org.create_account(AccountName="security", Email="security@example.com")[
        "CreateAccountStatus"]["AccountId"]
    # real AWS delegates aggregators under config.amazonaws.com; moto accepts only the multi-account one
    org.register_delegated_administrator(AccountId=security, ServicePrincipal="config-multiaccountsetup.amazonaws.com")
    c("config").put_configuration_aggregator(ConfigurationAggregatorName="organization",
                                             OrganizationAggregationSource={"RoleArn": role, "AllAwsRegions": True})
    outside.managed[HARDENED] = {}
    outside.selections[HARDENED] = {}
    rds.create_db_snapshot(DBInstanceIdentifier="good-db", DBSnapshotIdentifier="good-snap")

    for region in REGIONS:
        ec2 = c("ec2", region)
        ec2.enable_ebs_encryption_by_default()
        image = _image(ec2)
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="app", Description="ssh from the office", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
        for group in ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])[
                "SecurityGroups"]:
            if group.get("IpPermissions"):
                ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
            if group.get("IpPermissionsEgress"):
                ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=group["IpPermissionsEgress"])
        for acl in ec2.describe_network_acls()["NetworkAcls"]:
            for number, port in ((50, 22), (51, 3389)):
                ec2.create_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=number, Protocol="6",
                                             RuleAction="deny", Egress=False, CidrBlock="0.0.0.0/0",
                                             PortRange={"From": port, "To": port})
            # inbound: HTTPS and the ephemeral return range only, not every protocol
            ec2.replace_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=100, Protocol="6",
                                          RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0",
                                          PortRange={"From": 443, "To": 443})
            ec2.create_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=110, Protocol="6",
                                         RuleAction="allow", Egress=False, CidrBlock="0.0.0.0/0",
                                         PortRange={"From": 1024, "To": 65535})
        for each in ec2.describe_subnets()["Subnets"]:  # default subnets hand out public IPs: not here
            if each.get("MapPublicIpOnLaunch"):
                ec2.modify_subnet_attribute(SubnetId=each["SubnetId"], MapPublicIpOnLaunch={"Value": False})
        # a public tier next to the private one; the EC2 API through an endpoint
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        public = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.2.0/24")["Subnet"]["SubnetId"]
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        ec2.associate_route_table(RouteTableId=table, SubnetId=public)
        ec2.create_vpc_endpoint(VpcId=vpc, ServiceName=f"com.amazonaws.{region}.ec2", VpcEndpointType="Interface",
                                SubnetIds=[subnet], SecurityGroupIds=[sg])
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[sg],
                          IamInstanceProfile={"Arn": profile}, Monitoring={"Enabled": True},
                          MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
                          BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                "Ebs": {"VolumeSize": 8, "Encrypted": True}}])["Instances"][0]
        outside.managed[HARDENED][region] = [instance["InstanceId"]]  # the SSM agent reports in
        ec2.deregister_image(ImageId=image)  # moto gives registered images an unencrypted snapshot
        for snap in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]:
            ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
        ec2.create_volume(AvailabilityZone=f"{region}a", Size=1, Encrypted=True)
        for volume in ec2.describe_volumes()["Volumes"]:  # every volume has a snapshot, the root ones too
            ec2.create_snapshot(VolumeId=volume["VolumeId"])
        vpcs = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]
        ec2.create_flow_logs(ResourceIds=vpcs, ResourceType="VPC", TrafficType="ALL", LogDestinationType="s3",
                             LogDestination="arn:aws:s3:::hardened-logs")
        guardduty = c("guardduty", region)
        guardduty.create_detector(Enable=True)
        # the management account administers GuardDuty itself (allowed, if not the recommended set-up): moto's
        # GetAdministratorAccount answers in a casing botocore does not read, so a member's view cannot be shown
        guardduty.enable_organization_admin_account(AdminAccountId=HARDENED)
        plan = c("backup", region).create_backup_plan(BackupPlan={"BackupPlanName": "daily", "Rules": [
            {"RuleName": "daily", "TargetBackupVaultName": "Default", "ScheduleExpression": "cron(0 5 * * ? *)",
             "Lifecycle": {"DeleteAfterDays": 35}}]})["BackupPlanId"]
        outside.selections[HARDENED][plan] = [{
            "SelectionId": f"sel-{region}", "SelectionName": "everything", "IamRoleArn": role,
            "Resources": ["arn:aws:ec2:*:*:volume/*", "arn:aws:rds:*:*:db:*"], "NotResources": [],
            "ListOfTags": []}]
        cfg = c("config", region)
        cfg.put_configuration_recorder(ConfigurationRecorder={
            "name": "default", "roleARN": role,
            "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True}})
        cfg.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": "hardened-logs"})
        cfg.start_configuration_recorder(ConfigurationRecorderName="default")
        kms_here = c("kms", region)
        for made in kms_here.list_keys()["Keys"]:  # keys other services made for us rotate too
            kms_here.enable_key_rotation(KeyId=made["KeyId"])
    _plant_hardened_function(c, role, key)


def _plant_hardened_function(c: Clients, role: str, key: str) -> None:
    """The hardened function: in the VPC's private subnet, with a dead-letter queue (which moto drops) and
    a KMS key."""
    ec2 = c("ec2")
    vpc = next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault"))
    subnet = next(s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
                  if s["CidrBlock"] == "10.20.1.0/24")
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                   {"Name": "group-name", "Values": ["app"]}])["SecurityGroups"]
    sg = groups[0]["GroupId"]
    queue = c("sqs").create_queue(QueueName="good-fn-dlq")["QueueUrl"]
    dlq = c("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    c("lambda").create_function(FunctionName="good-fn", Runtime="python3.12", Role=role, Handler="app.handler",
                                Code={"ZipFile": _zip()}, Environment={"Variables": {"LOG_LEVEL": "info"}},
                                KMSKeyArn=key, VpcConfig={"SubnetIds": [subnet], "SecurityGroupIds": [sg]},
                                DeadLetterConfig={"TargetArn": dlq})
