"""The Data API's edge as packaged: Cognito (groups = roles, client id claim), the HTTP API's
JWT authorizer, throttling, CORS, access logs, and the console behind CloudFront with WAF in
the console edge stack, which deploys to us-east-1 whatever the stage's region."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from deploy_stacks import CONSOLE_ORIGIN, REGION, Packaged

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

# AWS creates CLOUDFRONT-scope web ACLs in this region only.
CLOUDFRONT_REGION = "us-east-1"


@pytest.fixture(scope="module")
def api(packaged: dict[str, Packaged]) -> Packaged:
    return packaged["api"]


@pytest.fixture(scope="module")
def edge(packaged: dict[str, Packaged]) -> Packaged:
    return packaged["console_edge"]


def _one(stack: Packaged, kind: str) -> dict[str, Any]:
    (resource,) = stack.of_type(kind).values()
    return resource["Properties"]


def test_cognito_groups_are_the_roles(api: Packaged) -> None:
    groups = {
        g["Properties"]["GroupName"] for g in api.of_type("AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == {"partner", "operator", "admin"}
    pool = _one(api, "AWS::Cognito::UserPool")
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert {"Name": "client_id", "AttributeDataType": "String", "Mutable": True}.items() <= (
        pool["Schema"][0].items()
    )
    client = _one(api, "AWS::Cognito::UserPoolClient")
    assert client["GenerateSecret"] is False and client["AllowedOAuthFlows"] == ["code"]
    assert "custom:client_id" not in client["WriteAttributes"]  # users cannot pick a client


def test_every_route_but_the_openapi_document_needs_a_jwt(api: Packaged) -> None:
    authorizer = _one(api, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "JWT"
    assert authorizer["JwtConfiguration"]["Audience"] == [{"Ref": "ConsoleUserPoolClient"}]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in api.of_type("AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == {"$default", "GET /openapi.json"}
    assert routes["$default"]["AuthorizationType"] == "JWT"
    assert "AuthorizationType" not in routes["GET /openapi.json"]


def test_throttling_cors_and_access_logs(api: Packaged) -> None:
    stage = _one(api, "AWS::ApiGatewayV2::Stage")
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] > 0
    assert stage["AccessLogSettings"]["DestinationArn"]
    # Only the console's origin, as deployed (DATAHARVEST_CONSOLE_ORIGIN), not a wildcard.
    cors = _one(api, "AWS::ApiGatewayV2::Api")["CorsConfiguration"]
    assert cors["AllowOrigins"] == [CONSOLE_ORIGIN]


def test_the_console_origin_is_one_setting_for_api_cognito_and_uploads(
    packaged: dict[str, Packaged], api: Packaged
) -> None:
    """The api stack (CORS, Cognito's redirects) and the root stack (the landing bucket's
    browser uploads) take the console's origin from the same deploy setting, not from the
    console edge stack's resources (another region: no import)."""
    client = _one(api, "AWS::Cognito::UserPoolClient")
    assert client["CallbackURLs"] == client["LogoutURLs"] == [f"{CONSOLE_ORIGIN}/console/"]
    landing = packaged["root"].resources["LandingBucket"]["Properties"]
    (rule,) = landing["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedOrigins"] == [CONSOLE_ORIGIN]
    assert not api.of_type("AWS::CloudFront::Distribution")
    assert not api.of_type("AWS::WAFv2::WebACL")
    assert "ConsoleDistribution" not in json.dumps(api.template)


def test_console_behind_cloudfront_with_waf_in_us_east_1(edge: Packaged) -> None:
    assert edge.region == CLOUDFRONT_REGION
    (acl_id,) = edge.of_type("AWS::WAFv2::WebACL")
    acl = edge.resources[acl_id]["Properties"]
    assert acl["Scope"] == "CLOUDFRONT"
    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in acl["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert managed == {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"}
    (rate,) = [r for r in acl["Rules"] if "RateBasedStatement" in r["Statement"]]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {"Limit": 2000, "AggregateKeyType": "IP"}

    distribution = _one(edge, "AWS::CloudFront::Distribution")["DistributionConfig"]
    assert distribution["WebACLId"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert distribution["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    (origin,) = distribution["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["ConsoleBucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"]["Fn::GetAtt"][0] == "ConsoleOriginAccessControl"
    bucket = edge.resources["ConsoleBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    policy = edge.resources["ConsoleBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ConsoleBucket"}
    (allow, deny) = policy["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert "ConsoleDistribution" in json.dumps(allow["Condition"])  # this distribution only
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    outputs = edge.template["Outputs"]
    assert outputs["ConsoleOrigin"]["Value"] == {
        "Fn::Join": ["", ["https://", {"Fn::GetAtt": ["ConsoleDistribution", "DomainName"]}]]
    }
    assert outputs["ConsoleWebAclArn"]["Value"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    assert outputs["ConsoleWebAclArn"]["Export"]["Name"]


def cloudfront_acl_problems(stack: Packaged) -> list[str]:
    """Why `stack` could not create its CLOUDFRONT web ACLs or attach them: such an ACL only
    exists in us-east-1, so its stack must be packaged for us-east-1 and refuse any other
    region itself (osls lets `--region` override a fixed provider.region); a distribution can
    only take an ACL of the same stack (exports do not cross regions)."""
    problems = []
    acls = {
        logical
        for logical, acl in stack.of_type("AWS::WAFv2::WebACL").items()
        if acl["Properties"]["Scope"] == "CLOUDFRONT"
    }
    if acls and stack.region != CLOUDFRONT_REGION:
        problems.append(f"{stack.name}: CLOUDFRONT web ACLs {sorted(acls)} in {stack.region}")
    guard = {"Fn::Equals": [{"Ref": "AWS::Region"}, CLOUDFRONT_REGION]}
    rules = stack.template.get("Rules", {}).values()
    if acls and not any(a["Assert"] == guard for r in rules for a in r["Assertions"]):
        problems.append(f"{stack.name}: no template rule refuses regions but us-east-1")
    for logical, distribution in stack.of_type("AWS::CloudFront::Distribution").items():
        acl = distribution["Properties"]["DistributionConfig"].get("WebACLId")
        if not (isinstance(acl, dict) and acl.get("Fn::GetAtt", [None])[0] in acls):
            problems.append(f"{stack.name}/{logical}: WebACLId {acl} is no CLOUDFRONT ACL here")
    return problems


def test_cloudfront_web_acls_only_in_us_east_1_stacks(packaged: dict[str, Packaged]) -> None:
    problems = [p for stack in packaged.values() for p in cloudfront_acl_problems(stack)]
    assert not problems, "\n".join(problems)
    with_acls = {s.name for s in packaged.values() if s.of_type("AWS::WAFv2::WebACL")}
    assert with_acls == {"console_edge"}


def test_the_us_east_1_check_fails_for_the_api_stack_as_it_was() -> None:
    """The check above, on the api stack before the split: distribution and CLOUDFRONT ACL
    in a stack of the stage's region (eu-west-1), no region rule."""
    template = {
        "Resources": {
            "ConsoleWebAcl": {"Type": "AWS::WAFv2::WebACL", "Properties": {"Scope": "CLOUDFRONT"}},
            "ConsoleDistribution": {
                "Type": "AWS::CloudFront::Distribution",
                "Properties": {
                    "DistributionConfig": {"WebACLId": {"Fn::GetAtt": ["ConsoleWebAcl", "Arn"]}}
                },
            },
        }
    }
    stack = Packaged("api", Path("services/api"), template, log="", region=REGION)
    assert cloudfront_acl_problems(stack) == [
        "api: CLOUDFRONT web ACLs ['ConsoleWebAcl'] in eu-west-1",
        "api: no template rule refuses regions but us-east-1",
    ]
    stack.region = CLOUDFRONT_REGION
    stack.template["Rules"] = {
        "UsEast1Only": {
            "Assertions": [{"Assert": {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}}]
        }
    }
    assert cloudfront_acl_problems(stack) == []
    # A distribution pointing at an ACL passed in from elsewhere is flagged too.
    distribution = template["Resources"]["ConsoleDistribution"]["Properties"]
    distribution["DistributionConfig"]["WebACLId"] = "arn:aws:wafv2:us-east-1:1:global/webacl/x"
    assert cloudfront_acl_problems(stack) == [
        "api/ConsoleDistribution: WebACLId arn:aws:wafv2:us-east-1:1:global/webacl/x "
        "is no CLOUDFRONT ACL here"
    ]


def test_api_function_is_bounded_and_in_the_vpc(api: Packaged) -> None:
    (function,) = api.of_type("AWS::Lambda::Function").values()
    props = function["Properties"]
    assert props["ReservedConcurrentExecutions"] <= 50  # each instance holds a connection
    assert props["VpcConfig"]["SubnetIds"]
    assert props["Timeout"] <= 29
