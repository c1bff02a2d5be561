"""The Data API's edge as packaged: Cognito (groups = roles, client id claim), the HTTP API's
JWT authorizer, throttling, CORS, access logs, and the console behind CloudFront with WAF."""

from __future__ import annotations

from typing import Any

import pytest
from deploy_stacks import Packaged

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def api(packaged: dict[str, Packaged]) -> Packaged:
    return packaged["api"]


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
    cors = _one(api, "AWS::ApiGatewayV2::Api")["CorsConfiguration"]
    origins = cors["AllowOrigins"]
    assert (
        len(origins) == 1 and "ConsoleDistribution" in str(origins[0]) and "*" not in str(origins)
    )


def test_console_behind_cloudfront_with_waf(api: Packaged) -> None:
    distribution = _one(api, "AWS::CloudFront::Distribution")["DistributionConfig"]
    assert distribution["WebACLId"] == {"Fn::GetAtt": ["ConsoleWebAcl", "Arn"]}
    assert distribution["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    acl = _one(api, "AWS::WAFv2::WebACL")
    assert acl["Scope"] == "CLOUDFRONT"
    assert any("RateBasedStatement" in rule["Statement"] for rule in acl["Rules"])
    bucket = api.resources["ConsoleBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_api_function_is_bounded_and_in_the_vpc(api: Packaged) -> None:
    (function,) = api.of_type("AWS::Lambda::Function").values()
    props = function["Properties"]
    assert props["ReservedConcurrentExecutions"] <= 50  # each instance holds a connection
    assert props["VpcConfig"]["SubnetIds"]
    assert props["Timeout"] <= 29
