//! `template.yaml` held to the code it deploys. cfn-lint and `sam validate
//! --lint` (run by `make test` before cargo) say the template is valid
//! CloudFormation; these tests say it is the right one for pacer: the table
//! has the keys and indexes `DynamoStore::create_table` makes, every
//! function's environment is a configuration pacer accepts, each role may
//! read exactly the secrets its function names and nothing runs with more
//! EC2 or IAM reach than its code needs, the routes send each path to its
//! function, and the console can never turn an API error into a page. The
//! policy documents of infra/iam are read the same way: every role sits
//! under the permissions boundary, which allows what the roles do and no
//! IAM administration, and the deployer can neither lift it nor reach
//! CloudFront beyond the stack's own resources.
//!
//! The template is read as YAML; CloudFormation's short tags (`!Ref`,
//! `!Sub`, `!If`, …) arrive as tagged values, and [`Stack`] evaluates them
//! the way CloudFormation would for one set of parameters, with stand-ins
//! for what only exists once deployed (`ref-Name`, `getatt-Name-Attr`: host-safe, so URLs built from them parse).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::Client;
use pacer_shared::config::{Config, Function};
use pacer_shared::host::lambda::BATCH_CONCURRENCY;
use pacer_shared::service::dispatch::POISON_RECEIVES;
use pacer_shared::store::dynamodb::DynamoStore;
use serde_norway::{Mapping, Value};

use crate::moto::Moto;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const STACK: &str = "pacer";

const FUNCTIONS: [(&str, &str); 5] = [
    ("WebhookFunction", "webhook"),
    ("ApiFunction", "api"),
    ("RunnerFunction", "runner"),
    ("OrchestratorFunction", "orchestrator"),
    ("ReaperFunction", "reaper"),
];

/// The function a template resource runs.
fn function_of(resource: &str) -> Function {
    match resource {
        "WebhookFunction" => Function::Webhook,
        "ApiFunction" => Function::Api,
        "RunnerFunction" => Function::Runner,
        "OrchestratorFunction" => Function::Orchestrator,
        "ReaperFunction" => Function::Reaper,
        other => panic!("{other} is not one of pacer's functions"),
    }
}

/// The parameters of a deployment with every option at its default.
fn defaults() -> Vec<(&'static str, &'static str)> {
    vec![("GitHubAppId", "123456")]
}

/// Every optional secret in use, from Secrets Manager, with SSO, a
/// custom console domain, and a pinned runner with its checksums.
fn everything_on() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GitHubAppId", "123456"),
        ("RunnerVersion", "2.330.0"),
        (
            "RunnerSha256LinuxX64",
            "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        ),
        (
            "RunnerSha256LinuxArm64",
            "F9E8D7C6B5A4938271605F4E3D2C1B0AF9E8D7C6B5A4938271605F4E3D2C1B0A",
        ),
        ("SecretStore", "secretsmanager"),
        ("SecretsPath", "teams/ci/pacer"),
        (
            "SecretsKmsKeyArn",
            "arn:aws:kms:us-east-1:123456789012:key/abcd",
        ),
        ("UsePreviousWebhookSecret", "true"),
        ("OidcIssuer", "https://idp.example.com/realms/ci"),
        ("OidcClientId", "pacer"),
        ("OidcAllowedDomains", "example.com,example.org"),
        ("OidcGroupsClaim", "groups"),
        ("OidcAdminGroups", "ci-admins"),
        ("ConsoleDomainName", "pacer.example.com"),
        (
            "ConsoleCertificateArn",
            "arn:aws:acm:us-east-1:123456789012:certificate/x",
        ),
    ]
}

// ---------------------------------------------------------------------- the table

#[tokio::test]
async fn the_table_has_the_keys_and_indexes_the_store_creates() {
    // Given the table exactly as the store's own create_table makes it
    let moto = Moto::start().await;
    let client = Client::new(&moto.sdk_config().await);
    DynamoStore::new(client.clone(), "pacer-template".into())
        .create_table()
        .await
        .expect("create the table on moto");
    let described = client
        .describe_table()
        .table_name("pacer-template")
        .send()
        .await
        .unwrap();
    let created = described.table().unwrap();
    let ttl = client
        .describe_time_to_live()
        .table_name("pacer-template")
        .send()
        .await
        .unwrap();

    // When the template's table is read
    let stack = Stack::new(&defaults());
    let table = stack.resource("StateTable");
    assert_eq!(table.text("Type"), "AWS::DynamoDB::Table");
    let props = table.at("Properties");

    // Then the keys, the attribute types and every index are the same
    let key_schema = |v: &Value| -> Vec<(String, String)> {
        v.items()
            .iter()
            .map(|k| {
                (
                    k.text("AttributeName").to_string(),
                    k.text("KeyType").to_string(),
                )
            })
            .collect()
    };
    let sdk_keys = |keys: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        keys.iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        key_schema(props.at("KeySchema")),
        sdk_keys(created.key_schema()),
        "the table's own key"
    );

    let attributes: BTreeSet<(String, String)> = props
        .at("AttributeDefinitions")
        .items()
        .iter()
        .map(|a| {
            (
                a.text("AttributeName").to_string(),
                a.text("AttributeType").to_string(),
            )
        })
        .collect();
    let created_attributes: BTreeSet<(String, String)> = created
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_string(),
                a.attribute_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(attributes, created_attributes, "attribute definitions");

    let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = props
        .at("GlobalSecondaryIndexes")
        .items()
        .iter()
        .map(|i| {
            (
                i.text("IndexName").to_string(),
                (
                    key_schema(i.at("KeySchema")),
                    i.at("Projection").text("ProjectionType").to_string(),
                ),
            )
        })
        .collect();
    let created_indexes: BTreeMap<String, (Vec<(String, String)>, String)> = created
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let projection = i
                .projection()
                .and_then(|p| p.projection_type())
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            (
                i.index_name().unwrap_or_default().to_string(),
                (sdk_keys(i.key_schema()), projection),
            )
        })
        .collect();
    assert_eq!(indexes, created_indexes, "global secondary indexes");

    // …billed on demand, expiring items by the store's TTL attribute, with
    // point-in-time recovery and deletion protection from the parameter
    assert_eq!(props.text("BillingMode"), "PAY_PER_REQUEST");
    assert_eq!(
        created
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let template_ttl = props.at("TimeToLiveSpecification");
    assert_eq!(
        Some(template_ttl.text("AttributeName")),
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name())
    );
    assert_eq!(template_ttl.at("Enabled"), &Value::Bool(true));
    assert_eq!(
        props
            .at("PointInTimeRecoverySpecification")
            .at("PointInTimeRecoveryEnabled"),
        &Value::Bool(true)
    );
    assert_eq!(
        stack.eval(props.at("DeletionProtectionEnabled")).as_str(),
        Some("true")
    );
    assert_eq!(
        Stack::new(&[("GitHubAppId", "1"), ("DeletionProtection", "false")])
            .eval(props.at("DeletionProtectionEnabled"))
            .as_str(),
        Some("false")
    );
}

// ---------------------------------------------------------------------- configuration

#[test]
fn every_function_environment_is_a_configuration_pacer_accepts() {
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        for (function, _) in FUNCTIONS {
            // Given the environment Lambda would hand the function
            let env = stack.environment(function);
            // (SECRETS_GENERATION only makes a deploy restart every function.)
            assert!(
                env.keys()
                    .all(|k| k.starts_with("PACER_") || k == "SECRETS_GENERATION"),
                "{function}: only PACER_* keys, got {:?}",
                env.keys()
            );

            // Then pacer's own loader accepts it as a whole configuration…
            let vars: Vec<(String, String)> = env.clone().into_iter().collect();
            let cfg = Config::load_for(function_of(function), None, &vars)
                .unwrap_or_else(|e| panic!("{function} with {parameters:?} would not start: {e}"));
            assert_eq!(
                cfg.aws.region, REGION,
                "{function}: the function's own region"
            );
            assert_eq!(cfg.database.table, format!("ref-{}", "StateTable"));

            // …and no secret sits in it in clear: each is a reference
            for (key, value) in &env {
                if key.starts_with("PACER_")
                    && (key.contains("SECRET") || key.contains("PRIVATE_KEY"))
                {
                    assert!(
                        value.starts_with("ssm:/") || value.starts_with("secretsmanager:"),
                        "{function}: {key} must be an ssm: or secretsmanager: reference, not {value:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn runners_and_github_use_the_api_gateway_url_and_people_the_console_url() {
    let stack = Stack::new(&defaults());
    let api_url = format!("https://ref-HttpApi.execute-api.{REGION}.amazonaws.com");
    for (function, _) in FUNCTIONS {
        let env = stack.environment(function);
        let public = env["PACER_SERVER_PUBLIC_URL"].as_str();
        if function == "ApiFunction" {
            assert_eq!(
                public, "https://getatt-ConsoleDistribution-DomainName",
                "the api is reached through CloudFront"
            );
            assert!(env.contains_key("PACER_SERVER_CLOUDFRONT_ORIGIN_SECRET"));
        } else {
            assert_eq!(public, api_url, "{function}");
        }
    }
    assert_eq!(stack.output("WebhookUrl"), format!("{api_url}/api/webhook"));
    assert_eq!(
        stack.output("ConsoleUrl"),
        "https://getatt-ConsoleDistribution-DomainName"
    );

    let custom = Stack::new(&everything_on());
    let env = custom.environment("ApiFunction");
    assert_eq!(env["PACER_SERVER_PUBLIC_URL"], "https://pacer.example.com");
    assert_eq!(
        env["PACER_AUTH_OIDC_REDIRECT_URL"],
        "https://pacer.example.com/api/auth/oidc/callback"
    );
    assert_eq!(custom.output("ConsoleUrl"), "https://pacer.example.com");
}

#[test]
fn each_function_is_given_only_the_secrets_its_own_work_needs() {
    // Every role-dependent secret, as the variable that names it.
    let core = Function::Serve.secret_env_vars();
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        for (function, _) in FUNCTIONS {
            let env = stack.environment(function);
            let given: Vec<String> = core
                .iter()
                .filter(|var| env.contains_key(*var))
                .cloned()
                .collect();
            assert_eq!(
                given,
                function_of(function).secret_env_vars(),
                "{function} with {parameters:?}"
            );
        }
    }
    // The orchestrator, which only launches, cannot read the App key at all.
    let stack = Stack::new(&defaults());
    assert!(
        !stack
            .role_statements(&stack.role_of("OrchestratorFunction"))
            .iter()
            .flat_map(|s| &s.resources)
            .any(|r| r.contains("github-private-key"))
    );
}

// ---------------------------------------------------------------------- IAM

#[test]
fn each_role_reads_exactly_the_secrets_its_function_names() {
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        for (function, _) in FUNCTIONS {
            let wanted: BTreeSet<(String, String)> = stack
                .environment(function)
                .values()
                .filter_map(|value| secret_grant(value))
                .collect();
            let granted: BTreeSet<(String, String)> = stack
                .role_statements(&stack.role_of(function))
                .iter()
                .filter(|s| s.effect == "Allow")
                .flat_map(|s| {
                    s.actions
                        .iter()
                        .filter(|a| {
                            matches!(
                                a.as_str(),
                                "ssm:GetParameter"
                                    | "ssm:GetParameters"
                                    | "secretsmanager:GetSecretValue"
                            )
                        })
                        .flat_map(|a| s.resources.iter().map(move |r| (a.clone(), r.clone())))
                        .collect::<Vec<_>>()
                })
                // AMI parameters (resolve:ssm:) are not secrets: they are
                // granted by prefix, which is what the `*` marks.
                .filter(|(_, resource)| !resource.ends_with('*'))
                .collect();
            assert_eq!(granted, wanted, "{function} with {parameters:?}");
        }
    }
}

/// The permission a secret reference needs: (action, resource).
fn secret_grant(value: &str) -> Option<(String, String)> {
    if let Some(name) = value.strip_prefix("ssm:") {
        return Some((
            "ssm:GetParameter".into(),
            format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"),
        ));
    }
    let id = value.strip_prefix("secretsmanager:")?;
    // A secret the stack makes is granted by its ARN (its Ref); one named
    // by the operator by name, plus the six characters Secrets Manager adds.
    let resource = if id.starts_with("ref-") || id.starts_with("arn:") {
        id.to_string()
    } else {
        format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{id}-??????")
    };
    Some(("secretsmanager:GetSecretValue".into(), resource))
}

#[test]
fn only_the_orchestrator_launches_and_it_may_pass_only_the_runner_role() {
    let stack = Stack::new(&everything_on());
    for (function, _) in FUNCTIONS {
        let role = stack.role_of(function);
        for s in stack.role_statements(&role) {
            for action in &s.actions {
                assert!(
                    !action.ends_with('*'),
                    "{role}: no wildcard action ({action})"
                );
                match action.as_str() {
                    "iam:PassRole" => {
                        assert_eq!(
                            function, "OrchestratorFunction",
                            "only the orchestrator passes a role"
                        );
                        assert_eq!(
                            s.resources,
                            ["getatt-RunnerRole-Arn"],
                            "the runner role and nothing else"
                        );
                    }
                    "ec2:RunInstances" => assert_eq!(function, "OrchestratorFunction"),
                    "ec2:TerminateInstances"
                    | "ec2:DeleteLaunchTemplate"
                    | "ec2:ModifyLaunchTemplate"
                    | "ec2:CreateLaunchTemplateVersion" => {
                        assert_eq!(
                            s.condition("aws:ResourceTag/pacer:deployment").as_deref(),
                            Some("pacer"),
                            "{role}: {action} only on this deployment's resources"
                        );
                    }
                    "ec2:CreateLaunchTemplate" => {
                        assert_eq!(
                            s.condition("aws:RequestTag/pacer:deployment").as_deref(),
                            Some("pacer")
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    // Launched instances and their volumes must carry the deployment tag.
    let launches: Vec<Statement> = stack
        .role_statements("OrchestratorRole")
        .into_iter()
        .filter(|s| s.actions.iter().any(|a| a == "ec2:RunInstances"))
        .collect();
    let instance = launches
        .iter()
        .find(|s| s.resources.iter().any(|r| r.contains(":instance/")))
        .expect("an instance grant");
    assert_eq!(
        instance
            .condition("aws:RequestTag/pacer:deployment")
            .as_deref(),
        Some("pacer")
    );
    // The runner callbacks never touch EC2.
    assert!(
        stack
            .role_statements("RunnerFunctionRole")
            .iter()
            .all(|s| s.actions.iter().all(|a| !a.starts_with("ec2:")))
    );
    // Each function writes only its own log group.
    for (function, binary) in FUNCTIONS {
        let logs: Vec<String> = stack
            .role_statements(&stack.role_of(function))
            .into_iter()
            .filter(|s| s.actions.iter().any(|a| a == "logs:PutLogEvents"))
            .flat_map(|s| s.resources)
            .collect();
        let group = stack.resource(&format!(
            "{}Logs",
            &function[..function.len() - "Function".len()]
        ));
        assert_eq!(
            stack
                .eval(group.at("Properties").at("LogGroupName"))
                .as_str(),
            Some(format!("/aws/lambda/{STACK}-{binary}").as_str())
        );
        assert_eq!(logs.len(), 1, "{function}: one log group");
        assert!(
            logs[0].starts_with("getatt-") && logs[0].ends_with("Logs-Arn"),
            "{function}: {logs:?}"
        );
    }
}

// ---------------------------------------------------------------------- routes, queue, schedule

#[test]
fn each_path_reaches_its_function_built_from_its_own_binary() {
    let stack = Stack::new(&defaults());
    let routes: BTreeMap<String, String> = stack
        .resources_of_type("AWS::ApiGatewayV2::Route")
        .map(|(_, route)| {
            let props = route.at("Properties");
            let target = stack.eval(props.at("Target"));
            let integration = target
                .as_str()
                .unwrap()
                .strip_prefix("integrations/ref-")
                .unwrap()
                .to_string();
            let uri = stack.eval(
                stack
                    .resource(&integration)
                    .at("Properties")
                    .at("IntegrationUri"),
            );
            let function = uri
                .as_str()
                .unwrap()
                .trim_start_matches("getatt-")
                .trim_end_matches("-Arn")
                .to_string();
            (props.text("RouteKey").to_string(), function)
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("ANY /api/webhook", "WebhookFunction"),
        ("ANY /api/runner/{proxy+}", "RunnerFunction"),
        ("ANY /api/{proxy+}", "ApiFunction"),
        ("GET /healthz", "ApiFunction"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(routes, expected);

    for (function, binary) in FUNCTIONS {
        let resource = stack.resource(function);
        let metadata = resource.at("Metadata");
        assert_eq!(metadata.text("BuildMethod"), "rust-cargolambda");
        assert_eq!(metadata.at("BuildProperties").text("Binary"), binary);
        // …which a workspace member builds: functions/<name>, binary <name>.
        let path = pacer_test_support::in_repo(&format!("functions/{binary}/Cargo.toml"));
        let manifest =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            manifest.contains(&format!("[[bin]]\nname = \"{binary}\"")),
            "functions/{binary} builds the {binary} binary"
        );
    }
    let globals = stack.doc.at("Globals").at("Function");
    assert_eq!(globals.text("Runtime"), "provided.al2023");
    assert_eq!(
        stack.eval(&globals.at("Architectures").items()[0]).as_str(),
        Some("arm64")
    );
}

#[test]
fn the_queue_outlasts_six_orchestrator_timeouts_hands_out_hints_at_once_and_dead_letters_only_after_pacer_gives_up()
 {
    let stack = Stack::new(&defaults());
    let queue = stack.resource("JobsQueue").at("Properties");
    let orchestrator = stack.resource("OrchestratorFunction").at("Properties");
    let timeout = orchestrator.at("Timeout").as_u64().unwrap();
    let visibility = queue.at("VisibilityTimeout").as_u64().unwrap();
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility}s must be at least 6 x the {timeout}s timeout"
    );

    let redrive = queue.at("RedrivePolicy");
    assert!(
        redrive.at("maxReceiveCount").as_u64().unwrap() > u64::from(POISON_RECEIVES),
        "the orchestrator fails a job after {POISON_RECEIVES} deliveries; the DLQ must not take it first"
    );
    assert_eq!(
        stack.eval(redrive.at("deadLetterTargetArn")).as_str(),
        Some("getatt-JobsDeadLetterQueue-Arn")
    );

    let event = orchestrator.at("Events").at("Jobs");
    assert_eq!(event.text("Type"), "SQS");
    assert_eq!(
        stack.eval(event.at("Properties").at("Queue")).as_str(),
        Some("getatt-JobsQueue-Arn")
    );
    assert_eq!(
        event.at("Properties").at("FunctionResponseTypes").items()[0].as_str(),
        Some("ReportBatchItemFailures")
    );
    // Set for latency: no job waits for a batch to fill, nor behind another
    // message of its batch.
    assert_eq!(
        event
            .at("Properties")
            .at("MaximumBatchingWindowInSeconds")
            .as_u64(),
        Some(0)
    );
    let batch = event.at("Properties").at("BatchSize").as_u64().unwrap();
    assert!(
        (1..=BATCH_CONCURRENCY as u64).contains(&batch),
        "a batch of {batch} would queue messages behind the {BATCH_CONCURRENCY} dispatched at once"
    );

    let schedule = stack
        .resource("ReaperFunction")
        .at("Properties")
        .at("Events")
        .at("Schedule");
    assert_eq!(schedule.text("Type"), "Schedule");
    assert_eq!(
        stack
            .eval(schedule.at("Properties").at("Schedule"))
            .as_str(),
        Some("rate(1 minute)")
    );
    // One pass at a time, and a dropped one is not replayed.
    let reaper = stack.resource("ReaperFunction").at("Properties");
    assert_eq!(reaper.at("ReservedConcurrentExecutions").as_u64(), Some(1));
    assert_eq!(
        reaper
            .at("EventInvokeConfig")
            .at("MaximumRetryAttempts")
            .as_u64(),
        Some(0)
    );
}

// ---------------------------------------------------------------------- console

#[test]
fn deep_links_load_the_console_but_api_errors_stay_json() {
    let stack = Stack::new(&defaults());
    let config = stack
        .resource("ConsoleDistribution")
        .at("Properties")
        .at("DistributionConfig");
    assert!(
        config
            .as_mapping()
            .unwrap()
            .get("CustomErrorResponses")
            .is_none(),
        "distribution-wide error pages would turn the API's 404s and 401s into index.html"
    );
    let default = config.at("DefaultCacheBehavior");
    assert_eq!(default.text("TargetOriginId"), "console");
    let rewrite = &default.at("FunctionAssociations").items()[0];
    assert_eq!(
        stack.eval(rewrite.at("FunctionARN")).as_str(),
        Some("getatt-SpaRewriteFunction-FunctionMetadata-FunctionARN")
    );

    let behaviours: BTreeMap<&str, &Value> = config
        .at("CacheBehaviors")
        .items()
        .iter()
        .map(|b| (b.text("PathPattern"), b))
        .collect();
    assert_eq!(
        behaviours.keys().copied().collect::<Vec<_>>(),
        ["/api/*", "/api/v1/*", "/healthz"]
    );
    // CloudFront takes the first behaviour that matches: /api/v1/* must come
    // before /api/*, or bearer tokens never reach the self-service API.
    let order: Vec<&str> = config
        .at("CacheBehaviors")
        .items()
        .iter()
        .map(|b| b.text("PathPattern"))
        .collect();
    assert_eq!(order.first(), Some(&"/api/v1/*"), "{order:?}");
    let bearer = behaviours["/api/v1/*"];
    assert_eq!(
        stack.eval(bearer.at("CachePolicyId")).as_str(),
        Some("ref-ApiBearerCachePolicy")
    );
    let key = stack
        .resource("ApiBearerCachePolicy")
        .at("Properties")
        .at("CachePolicyConfig");
    assert_eq!(
        key.at("MaxTTL").as_u64(),
        Some(1),
        "nothing outlives a second"
    );
    let forwarded_headers: Vec<&str> = key
        .at("ParametersInCacheKeyAndForwardedToOrigin")
        .at("HeadersConfig")
        .at("Headers")
        .items()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!(forwarded_headers, ["Authorization"]);
    for (path, behaviour) in behaviours {
        assert_eq!(behaviour.text("TargetOriginId"), "api", "{path}");
        assert!(
            behaviour
                .as_mapping()
                .unwrap()
                .get("FunctionAssociations")
                .is_none(),
            "{path}: no SPA rewrite"
        );
        if path != "/api/v1/*" {
            assert_eq!(
                behaviour.text("CachePolicyId"),
                "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
                "{path}: never cached"
            );
        }
        assert_eq!(
            stack.eval(behaviour.at("OriginRequestPolicyId")).as_str(),
            Some("ref-ApiOriginRequestPolicy"),
            "{path}"
        );
    }
    // The API sees the session cookie and the viewer's address, and never
    // the viewer's Host (API Gateway answers only to its own name).
    let forwarded = stack
        .resource("ApiOriginRequestPolicy")
        .at("Properties")
        .at("OriginRequestPolicyConfig");
    assert_eq!(forwarded.at("CookiesConfig").text("CookieBehavior"), "all");
    let headers = forwarded.at("HeadersConfig");
    assert_eq!(headers.text("HeaderBehavior"), "whitelist");
    let names: Vec<&str> = headers
        .at("Headers")
        .items()
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert!(names.contains(&"CloudFront-Viewer-Address"), "{names:?}");
    assert!(
        !names.iter().any(|h| h.eq_ignore_ascii_case("host")),
        "{names:?}"
    );

    // The api origin proves itself with the generated secret, which the api
    // function is told to expect.
    let api_origin = config
        .at("Origins")
        .items()
        .iter()
        .find(|o| o.text("Id") == "api")
        .unwrap();
    let header = &api_origin.at("OriginCustomHeaders").items()[0];
    assert_eq!(header.text("HeaderName"), "X-Pacer-Origin-Secret");
    assert_eq!(
        stack.eval(header.at("HeaderValue")).as_str(),
        Some("{{resolve:secretsmanager:ref-CloudFrontOriginSecret:SecretString}}")
    );
    assert_eq!(
        stack.environment("ApiFunction")["PACER_SERVER_CLOUDFRONT_ORIGIN_SECRET"],
        "secretsmanager:ref-CloudFrontOriginSecret"
    );

    // The bucket is private: CloudFront reads it through origin access control.
    let bucket = stack
        .resource("ConsoleBucket")
        .at("Properties")
        .at("PublicAccessBlockConfiguration");
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(bucket.at(flag), &Value::Bool(true), "{flag}");
    }
    let console_origin = config
        .at("Origins")
        .items()
        .iter()
        .find(|o| o.text("Id") == "console")
        .unwrap();
    assert_eq!(
        stack
            .eval(console_origin.at("OriginAccessControlId"))
            .as_str(),
        Some("getatt-ConsoleOriginAccess-Id")
    );
}

// ---------------------------------------------------------------------- infra/

/// The placeholders the policy documents in infra/iam use (filled with
/// `envsubst`, README "Deploy to AWS").
const PLACEHOLDERS: [&str; 9] = [
    "AWS_REGION",
    "AWS_ACCOUNT_ID",
    "PACER_STACK",
    "PACER_SECRETS_PATH",
    "PACER_TABLE",
    "PACER_QUEUE",
    "PACER_DEPLOYMENT",
    "PACER_RUNNER_ROLE",
    "PACER_AMI_PREFIX",
];

/// Where the administrator puts the boundary: a path of its own, so that
/// no `policy/pacer/${PACER_STACK}/*` right of the deployer reaches it.
const BOUNDARY: &str = "arn:aws:iam::${AWS_ACCOUNT_ID}:policy/boundary/${PACER_STACK}";

/// What the deployer may do to a role only when the role carries the
/// boundary: every role action IAM lets `iam:PermissionsBoundary` decide.
const ROLE_CHANGES: [&str; 10] = [
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
    "iam:PutRolePermissionsBoundary",
];

/// What changes a managed policy: none of it may reach the boundary's.
const BOUNDARY_WRITES: [&str; 6] = [
    "iam:CreatePolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:TagPolicy",
    "iam:UntagPolicy",
];

/// What a job on a runner could read pacer's secrets with.
const SECRET_READS: [&str; 6] = [
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
];

#[test]
fn the_single_binary_policy_allows_what_the_functions_do_together() {
    let stack = Stack::new(&everything_on());
    let functions: BTreeSet<String> = FUNCTIONS
        .iter()
        .flat_map(|(function, _)| stack.role_statements(&stack.role_of(function)))
        .flat_map(|s| s.actions)
        // Lambda's own log groups and a customer-managed key are the template's business.
        .filter(|a| !a.starts_with("logs:") && a != "kms:Decrypt")
        .collect();

    let statements = policy("pacer-single-binary-policy.json", &[]);
    let allowed: BTreeSet<String> = statements.iter().flat_map(|s| s.actions.clone()).collect();
    let missing: Vec<&String> = functions.difference(&allowed).collect();
    assert!(missing.is_empty(), "`pacer serve` would lack {missing:?}");

    for s in &statements {
        if s.actions.iter().any(|a| a == "iam:PassRole") {
            assert_eq!(
                s.resources,
                ["arn:aws:iam::${AWS_ACCOUNT_ID}:role/${PACER_RUNNER_ROLE}"],
                "the runner role alone"
            );
        }
        if s.actions.iter().any(|a| a == "ec2:TerminateInstances") {
            assert_eq!(
                s.condition("aws:ResourceTag/pacer:deployment").as_deref(),
                Some("${PACER_DEPLOYMENT}")
            );
        }
    }
}

#[test]
fn the_policy_documents_are_json_with_known_placeholders() {
    let dir = pacer_test_support::in_repo("infra/iam");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc["Version"], "2012-10-17", "{name}");
        for placeholder in text
            .split("${")
            .skip(1)
            .map(|rest| &rest[..rest.find('}').unwrap()])
        {
            assert!(
                PLACEHOLDERS.contains(&placeholder),
                "{name}: unknown placeholder ${{{placeholder}}}"
            );
        }
        seen += 1;
    }
    assert!(
        seen >= 5,
        "the runner, single-binary, deployer and boundary documents"
    );
}

#[test]
fn every_role_the_stack_creates_carries_the_permissions_boundary() {
    let boundary = fill(BOUNDARY, &Stack::new(&defaults()).placeholder_values());
    for parameters in [defaults(), everything_on()] {
        // Given a deployment naming the boundary the administrator created
        let mut with_boundary: Vec<(&str, &str)> = parameters.clone();
        with_boundary.push(("PermissionsBoundary", boundary.as_str()));
        let stack = Stack::new(&with_boundary);
        let bare = Stack::new(&parameters);

        // Then every role of the template carries it…
        let roles: Vec<&str> = stack
            .resources_of_type("AWS::IAM::Role")
            .map(|(name, _)| name)
            .collect();
        assert!(
            roles.contains(&"RunnerRole"),
            "the runners' role is one of them: {roles:?}"
        );
        for role in &roles {
            let carried = |stack: &Stack| {
                let properties = stack.eval(stack.resource(role).at("Properties"));
                properties.get("PermissionsBoundary").cloned()
            };
            assert_eq!(
                carried(&stack),
                Some(Value::String(boundary.clone())),
                "{role}"
            );
            // …and a deployment without one still works: the roles carry none
            assert_eq!(carried(&bare), None, "{role} without a boundary");
        }

        // …every function runs as one of those roles, and a role SAM would
        // generate for a function without one carries it too
        let globals = stack.doc.at("Globals").at("Function");
        assert_eq!(
            stack.eval(globals.at("PermissionsBoundary")).as_str(),
            Some(boundary.as_str()),
            "SAM's generated roles"
        );
        for (function, resource) in stack.resources_of_type("AWS::Serverless::Function") {
            if resource
                .at("Properties")
                .as_mapping()
                .unwrap()
                .contains_key("Role")
            {
                assert!(
                    roles.contains(&stack.role_of(function).as_str()),
                    "{function} runs as a role of this template"
                );
            }
        }
    }
}

#[test]
fn the_deployer_changes_roles_only_within_the_boundary_and_attaches_only_the_stacks_policies() {
    let stack = Stack::new(&defaults());
    let values = stack.placeholder_values();
    let deployer = deployer_statements(&values);
    let boundary = fill(BOUNDARY, &values);
    let stack_role = stack.arn_of("WebhookRole");
    let allowing = |action: &str| -> Vec<&Statement> {
        deployer
            .iter()
            .filter(|s| s.effect == "Allow" && s.grants(action))
            .collect()
    };
    // A deny of `action` on `resource` under exactly these tests, or none.
    let denied = |action: &str, resource: &str, condition: &[(&str, &str, &str)]| {
        let condition: Vec<(String, String, Vec<String>)> = condition
            .iter()
            .map(|(o, k, v)| (o.to_string(), k.to_string(), vec![v.to_string()]))
            .collect();
        deployer.iter().any(|s| {
            s.effect == "Deny" && s.grants(action) && s.reaches(resource) && s.tests() == condition
        })
    };
    let without_boundary = [(
        "StringNotEquals",
        "iam:PermissionsBoundary",
        boundary.as_str(),
    )];

    // Whatever lets the deployer create or change a role requires the boundary on it
    for action in ROLE_CHANGES {
        let grants = allowing(action);
        assert!(!grants.is_empty(), "CloudFormation needs {action}");
        for s in grants {
            let required = s.condition_values("StringEquals", "iam:PermissionsBoundary");
            assert_eq!(
                required,
                Some(vec![boundary.clone()]),
                "{action} only with the boundary"
            );
        }
        // (and an explicit deny holds even beside a broader policy)
        assert!(
            denied(action, &stack_role, &without_boundary),
            "{action} without the boundary is denied"
        );
    }

    // The boundary never comes off
    assert!(allowing("iam:DeleteRolePermissionsBoundary").is_empty());
    assert!(
        denied("iam:DeleteRolePermissionsBoundary", &stack_role, &[]),
        "removing the boundary is denied outright"
    );

    // Attaching is limited to the stack's own policies: no AWS managed one
    let managed = BTreeSet::from([format!("arn:aws:iam::{ACCOUNT}:policy/pacer/{STACK}/*")]);
    for action in ["iam:AttachRolePolicy", "iam:DetachRolePolicy"] {
        for s in allowing(action) {
            let arns: BTreeSet<String> = s
                .condition_values("ArnLike", "iam:PolicyARN")
                .unwrap_or_default()
                .into_iter()
                .collect();
            assert_eq!(arns, managed, "{action}: the stack's policies alone");
        }
    }

    // The boundary policy itself is the administrator's alone
    for action in BOUNDARY_WRITES {
        assert!(
            allowing(action).iter().all(|s| !s.reaches(&boundary)),
            "{action} on the boundary"
        );
        assert!(
            denied(action, &boundary, &[]),
            "{action} on the boundary is denied outright"
        );
    }

    // Roles are passed only to the services that run them, and only the stack's
    let passes = allowing("iam:PassRole");
    assert!(
        !passes.is_empty(),
        "CloudFormation passes the functions' roles to Lambda"
    );
    for s in passes {
        let services = s
            .condition_values("StringEquals", "iam:PassedToService")
            .expect("iam:PassedToService");
        assert!(
            services
                .iter()
                .all(|service| ["lambda.amazonaws.com", "ec2.amazonaws.com"]
                    .contains(&service.as_str())),
            "{services:?}"
        );
        assert!(
            s.resources
                .iter()
                .all(|r| r.starts_with(&format!("arn:aws:iam::{ACCOUNT}:role/pacer/{STACK}/"))),
            "{:?}",
            s.resources
        );
    }
}

#[test]
fn the_deployer_writes_cloudfront_only_where_the_stacks_tag_or_name_says_it_is_the_stacks() {
    // CloudFront's authorization reference gives these no tag condition key:
    // the two creates have no resource type at all (they can only make
    // something new), and origin access controls and origin request policies
    // carry no tags and have ARNs made of a generated ID, so they can be
    // named only as `…/*`; cache policies likewise.
    const UNSCOPABLE: [&str; 9] = [
        "cloudfront:CreateOriginAccessControl",
        "cloudfront:CreateOriginRequestPolicy",
        "cloudfront:CreateCachePolicy",
        "cloudfront:UpdateOriginAccessControl",
        "cloudfront:DeleteOriginAccessControl",
        "cloudfront:UpdateOriginRequestPolicy",
        "cloudfront:DeleteOriginRequestPolicy",
        "cloudfront:UpdateCachePolicy",
        "cloudfront:DeleteCachePolicy",
    ];
    let stack = Stack::new(&defaults());

    // Given the template tags its distribution and its function as the stack's
    for name in ["ConsoleDistribution", "SpaRewriteFunction"] {
        let tags = stack.eval(stack.resource(name).at("Properties").at("Tags"));
        assert!(
            tags.items()
                .iter()
                .any(|t| t.text("Key") == "pacer:stack" && t.text("Value") == STACK),
            "{name}: {tags:?}"
        );
    }

    // Then no CloudFront write reaches every resource of a kind without that tag
    let values = stack.placeholder_values();
    let every = format!("arn:aws:cloudfront::{ACCOUNT}:");
    for s in deployer_statements(&values)
        .iter()
        .filter(|s| s.effect == "Allow")
    {
        for action in s.actions.iter().filter(|a| a.starts_with("cloudfront:")) {
            let verb = &action["cloudfront:".len()..];
            if ["Get", "List", "Describe"]
                .iter()
                .any(|read| verb.starts_with(read))
                || UNSCOPABLE.contains(&action.as_str())
            {
                continue;
            }
            let anywhere = s.resources.iter().any(|r| {
                r == "*"
                    || r.strip_prefix(&every)
                        .is_some_and(|kind| !kind.contains(STACK) && kind.ends_with("/*"))
            });
            let tagged = ["aws:RequestTag/pacer:stack", "aws:ResourceTag/pacer:stack"]
                .iter()
                .any(|key| {
                    s.condition_values("StringEquals", key) == Some(vec![STACK.to_string()])
                });
            assert!(
                !anywhere || tagged,
                "{action} on {:?} without the stack's tag",
                s.resources
            );
        }
    }
}

#[test]
fn the_boundary_allows_what_every_role_of_the_stack_does_and_no_iam_administration() {
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        let boundary = policy("permissions-boundary.json", &stack.placeholder_values());
        // Every grant of every role, on the resource as deployed, under the
        // role's own conditions, stays inside the boundary
        for (role, _) in stack.resources_of_type("AWS::IAM::Role") {
            for s in stack
                .role_statements(role)
                .iter()
                .filter(|s| s.effect == "Allow")
            {
                for (action, resource) in s
                    .actions
                    .iter()
                    .flat_map(|a| s.resources.iter().map(move |r| (a, r)))
                {
                    let arn = stack.deployed_arn(resource);
                    assert!(
                        boundary.iter().any(|b| b.effect == "Allow"
                            && b.grants(action)
                            && b.reaches(&arn)
                            && b.holds_whenever(s)),
                        "{role} with {parameters:?}: the boundary would take away {action} on {arn}"
                    );
                }
            }
        }
    }

    // …and no role holds what the template does not spell out: an AWS
    // managed policy grants what AWS decides (AmazonSSMManagedInstanceCore
    // once gave runners ssm:GetParameter on every parameter)
    assert_eq!(
        Stack::aws_managed_policies(),
        BTreeSet::new(),
        "every grant is written in the template"
    );
    let boundary = policy(
        "permissions-boundary.json",
        &Stack::new(&defaults()).placeholder_values(),
    );

    // The boundary names each action, and its only IAM ones hand the runner
    // role to EC2 and create EC2's spot role: no role, user, group or policy
    // can be made or changed under it
    for s in &boundary {
        for action in &s.actions {
            assert!(
                !action.contains('*'),
                "the boundary names its actions: {action}"
            );
            if let Some(iam) = action.strip_prefix("iam:") {
                assert!(
                    ["PassRole", "CreateServiceLinkedRole"].contains(&iam),
                    "no IAM administration: {action}"
                );
            }
        }
        if s.grants("iam:PassRole") {
            assert_eq!(
                s.condition_values("StringEquals", "iam:PassedToService"),
                Some(vec!["ec2.amazonaws.com".to_string()])
            );
        }
        if s.grants("iam:CreateServiceLinkedRole") {
            assert_eq!(
                s.condition_values("StringLike", "iam:AWSServiceName"),
                Some(vec!["spot.amazonaws.com".to_string()])
            );
        }
    }
}

/// Every step of every job runs with the runner role. With Session Manager
/// on, AmazonSSMManagedInstanceCore once gave it ssm:GetParameter on `*`,
/// and the boundary it shares with the functions allows their secrets: a job
/// could read the GitHub App's key. Now the role allows Session Manager's own
/// actions and nothing else, and denies every secret a function reads (and
/// the secrets path whole) to any policy attached later.
#[test]
fn a_runner_can_read_none_of_pacers_secrets_even_with_session_manager() {
    let with_ssm = |mut parameters: Vec<(&'static str, &'static str)>| {
        parameters.push(("RunnerSsmAccess", "true"));
        parameters
    };
    // Secrets in SSM and in Secrets Manager, Session Manager off and on
    for parameters in [defaults(), with_ssm(defaults()), with_ssm(everything_on())] {
        let stack = Stack::new(&parameters);
        let path = stack.parameters["SecretsPath"].clone();
        let runner = stack.role_statements("RunnerRole");
        let denies = |action: &str, arn: &str| {
            runner.iter().any(|s| {
                s.effect == "Deny" && s.grants(action) && s.reaches(arn) && s.condition.is_null()
            })
        };

        // What any function reads from the secrets path or Secrets Manager
        let mut secrets = BTreeSet::new();
        for (role, _) in stack.resources_of_type("AWS::IAM::Role") {
            for s in stack
                .role_statements(role)
                .iter()
                .filter(|s| s.effect == "Allow")
            {
                if SECRET_READS.iter().any(|action| s.grants(action)) {
                    secrets.extend(s.resources.iter().map(|r| stack.deployed_arn(r)).filter(
                        |arn| {
                            arn.contains(":secretsmanager:")
                                || arn.contains(&format!(":parameter/{path}/"))
                        },
                    ));
                }
            }
        }
        assert!(
            secrets.len() >= 4,
            "the functions read their secrets: {secrets:?}"
        );
        for arn in &secrets {
            for action in SECRET_READS {
                assert!(
                    denies(action, arn),
                    "{parameters:?}: the runner role does not deny {action} on {arn}"
                );
            }
        }
        // The path itself and anything under it, named later
        for action in SECRET_READS {
            assert!(
                denies(
                    action,
                    &format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{path}")
                ),
                "{action} on the path"
            );
            assert!(
                denies(
                    action,
                    &format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{path}/added-later")
                ),
                "{action}"
            );
            assert!(
                denies(
                    action,
                    &format!(
                        "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{path}/added-later-AbCdEf"
                    )
                ),
                "{action}"
            );
        }

        // What it is allowed: Session Manager's five actions, and only when asked for
        let allowed: BTreeSet<&str> = runner
            .iter()
            .filter(|s| s.effect == "Allow")
            .flat_map(|s| s.actions.iter().map(String::as_str))
            .collect();
        let session_manager = BTreeSet::from([
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        ]);
        let expected = if parameters.contains(&("RunnerSsmAccess", "true")) {
            session_manager
        } else {
            BTreeSet::new()
        };
        assert_eq!(allowed, expected, "{parameters:?}");
    }
}

#[test]
fn each_managed_policy_document_fits_in_6144_characters_even_with_long_names() {
    // IAM counts a managed policy without its whitespace, once envsubst has
    // filled it: give every name the longest value DeploymentName allows.
    let long = "x".repeat(32);
    let values: Vec<(&str, String)> = Stack::new(&defaults())
        .placeholder_values()
        .into_iter()
        .map(|(name, value)| match name {
            "AWS_REGION" => (name, "ap-southeast-2".to_string()),
            _ if name.starts_with("PACER_") => (name, long.clone()),
            _ => (name, value),
        })
        .collect();
    for name in DEPLOYER.iter().chain(&["permissions-boundary.json"]) {
        let text = fill(&std::fs::read_to_string(iam_path(name)).unwrap(), &values);
        assert!(!text.contains("${"), "{name}: every placeholder filled");
        let size = text.chars().filter(|c| !c.is_whitespace()).count();
        assert!(size < 6144, "{name}: {size} characters");
    }
}

#[test]
fn no_policy_of_a_stack_reaches_a_stack_whose_name_begins_with_its_own() {
    // Given every policy written for the stack pacer
    let ours = Stack::new(&defaults());
    let documents = documents_of(&ours);

    // When stacks run beside it whose names begin with its own: pacer-staging,
    // pacer-x, and each name that begins one of pacer's own (pacer-jobs,
    // pacer-WebhookRole, …), where a pattern's wildcard would meet theirs
    let mut neighbours: BTreeSet<String> = ["pacer-staging", "pacer-x"].map(String::from).into();
    for owned in ours.every_arn() {
        for (at, _) in owned.arn.match_indices(&format!("{STACK}-")) {
            let name: String = owned.arn[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let cuts = name
                .match_indices('-')
                .map(|(cut, _)| name[..cut].to_string())
                .chain([name.clone()]);
            neighbours.extend(cuts.filter(|n| n.len() > STACK.len() + 1));
        }
    }
    let mut reached: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for neighbour in &neighbours {
        for theirs in Stack::named(neighbour, &defaults()).every_arn() {
            for (document, s) in &documents {
                for pattern in s.resources.iter().filter(|r| *r != "*") {
                    if wildcard(pattern, &theirs.arn) && s.may_apply_to(&theirs.tags) {
                        let hit = format!(
                            "{document} {}: {pattern} reaches {} of {}",
                            s.effect, theirs.arn, theirs.resource
                        );
                        reached.entry(neighbour.clone()).or_default().push(hit);
                    }
                }
            }
        }
    }

    // Then no pattern matches any of theirs, but for the names
    // infra/README.md reserves: CloudFormation names the console bucket
    // <stack>-consolebucket-<random>, which a stack named
    // pacer-consolebucket(-…) would extend
    let reserved = format!("{STACK}-consolebucket");
    let (bucket, others): (BTreeMap<_, _>, BTreeMap<_, _>) = reached
        .into_iter()
        .partition(|(name, _)| *name == reserved || name.starts_with(&format!("{reserved}-")));
    assert!(others.is_empty(), "{others:#?}");
    assert!(
        neighbours.contains(&reserved),
        "the reserved name is one of the neighbours tried"
    );
    for hit in bucket.values().flatten() {
        assert!(
            hit.ends_with(" of ConsoleBucket"),
            "{reserved} shares only the bucket: {hit}"
        );
    }
}

#[test]
fn the_deployer_reaches_every_resource_of_its_own_stack() {
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        let deployer = deployer_statements(&stack.placeholder_values());
        for owned in stack.every_arn() {
            assert!(
                deployer.iter().any(|s| s.effect == "Allow"
                    && s.reaches(&owned.arn)
                    && s.may_apply_to(&owned.tags)),
                "{}: nothing lets the deployer manage {}",
                owned.resource,
                owned.arn
            );
        }
    }
}

/// Every statement IAM reads for the stack, with the document it comes
/// from: the deployer's, the boundary, the single binary's (with the
/// stack's own table, queue and runner role), and each role's own.
fn documents_of(stack: &Stack) -> Vec<(String, Statement)> {
    let mut values = stack.placeholder_values();
    let runner_role = stack.arn_of("RunnerRole");
    let queue = stack.arn_of("JobsQueue");
    values.extend([
        ("PACER_TABLE", stack.name.clone()),
        ("PACER_QUEUE", queue.rsplit(':').next().unwrap().to_string()),
        (
            "PACER_RUNNER_ROLE",
            runner_role.split_once(":role/").unwrap().1.to_string(),
        ),
    ]);
    let files = DEPLOYER.iter().chain(&[
        "permissions-boundary.json",
        "pacer-single-binary-policy.json",
    ]);
    let mut documents: Vec<(String, Statement)> = files
        .flat_map(|name| {
            policy(name, &values)
                .into_iter()
                .map(move |s| (name.to_string(), s))
        })
        .collect();
    for (role, _) in stack.resources_of_type("AWS::IAM::Role") {
        for mut s in stack.role_statements(role) {
            s.resources = s.resources.iter().map(|r| stack.deployed_arn(r)).collect();
            documents.push((role.to_string(), s));
        }
    }
    documents
}

fn iam_path(name: &str) -> std::path::PathBuf {
    pacer_test_support::in_repo(&format!("infra/iam/{name}"))
}

/// `envsubst`: each `${NAME}` of `values` replaced by its value.
fn fill(text: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(text.to_string(), |text, (name, value)| {
        text.replace(&format!("${{{name}}}"), value)
    })
}

/// A policy document of infra/iam with its placeholders filled.
fn policy(name: &str, values: &[(&str, String)]) -> Vec<Statement> {
    let text = fill(&std::fs::read_to_string(iam_path(name)).unwrap(), values);
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::String(one) => vec![one.clone()],
            many => many
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect(),
        }
    };
    doc["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            for unread in ["NotAction", "NotResource", "NotPrincipal"] {
                assert!(
                    s.get(unread).is_none(),
                    "{name}: the test's evaluator does not read {unread}"
                );
            }
            Statement {
                effect: s["Effect"].as_str().unwrap().to_string(),
                actions: list(&s["Action"]),
                resources: list(&s["Resource"]),
                condition: serde_norway::to_value(&s["Condition"]).unwrap(),
            }
        })
        .collect()
}

/// The deployer's documents: one managed policy holds at most 6,144
/// characters.
const DEPLOYER: [&str; 3] = [
    "deployer-policy-1.json",
    "deployer-policy-2.json",
    "deployer-policy-3.json",
];

/// The deployer's documents, as one identity would hold them.
fn deployer_statements(values: &[(&str, String)]) -> Vec<Statement> {
    DEPLOYER
        .iter()
        .flat_map(|name| policy(name, values))
        .collect()
}

// ---------------------------------------------------------------------- the evaluator

/// The template with one set of parameter values, deployed as one stack.
struct Stack {
    doc: Value,
    parameters: BTreeMap<String, String>,
    name: String,
}

/// One IAM statement, evaluated.
#[derive(Debug, Clone)]
struct Statement {
    effect: String,
    actions: Vec<String>,
    resources: Vec<String>,
    condition: Value,
}

impl Statement {
    /// The value a condition key must equal, under any operator.
    fn condition(&self, key: &str) -> Option<String> {
        self.condition
            .as_mapping()?
            .values()
            .find_map(|tests| tests.as_mapping()?.get(key))
            .and_then(scalar)
    }

    /// Every test of the Condition block: (operator, key, values).
    fn tests(&self) -> Vec<(String, String, Vec<String>)> {
        let Some(operators) = self.condition.as_mapping() else {
            return Vec::new();
        };
        operators
            .iter()
            .flat_map(|(operator, keys)| {
                keys.as_mapping().unwrap().iter().map(move |(key, values)| {
                    let values = match values {
                        Value::Sequence(items) => items.iter().filter_map(scalar).collect(),
                        one => scalar(one).into_iter().collect(),
                    };
                    (
                        operator.as_str().unwrap().to_string(),
                        key.as_str().unwrap().to_string(),
                        values,
                    )
                })
            })
            .collect()
    }

    /// The values `key` is tested against with `operator`, if it is.
    fn condition_values(&self, operator: &str, key: &str) -> Option<Vec<String>> {
        self.tests()
            .into_iter()
            .find(|(o, k, _)| o == operator && k == key)
            .map(|(_, _, values)| values)
    }

    /// Whether its actions name `action` (IAM compares them case-insensitively).
    fn grants(&self, action: &str) -> bool {
        self.actions
            .iter()
            .any(|pattern| wildcard(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase()))
    }

    fn reaches(&self, resource: &str) -> bool {
        self.resources
            .iter()
            .any(|pattern| wildcard(pattern, resource))
    }

    /// Whether its conditions can hold for a resource carrying `tags`: a
    /// resource tag it requires must be there, with a value it names.
    fn may_apply_to(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tests().iter().all(|(operator, key, values)| {
            match key.strip_prefix("aws:ResourceTag/") {
                Some(tag) if operator == "StringEquals" => {
                    tags.get(tag).is_some_and(|value| values.contains(value))
                }
                _ => true,
            }
        })
    }

    /// Whether its conditions hold whenever `other`'s do: each of its tests
    /// is also one of `other`'s, on no other values.
    fn holds_whenever(&self, other: &Statement) -> bool {
        let theirs = other.tests();
        self.tests().iter().all(|(operator, key, values)| {
            theirs
                .iter()
                .any(|(o, k, v)| o == operator && k == key && v.iter().all(|x| values.contains(x)))
        })
    }
}

/// One ARN by which a policy may name something a stack made.
#[derive(Debug)]
struct Owned {
    /// The template's resource it belongs to.
    resource: String,
    arn: String,
    tags: BTreeMap<String, String>,
}

impl Owned {
    fn new(resource: &str, arn: String) -> Owned {
        Owned {
            resource: resource.to_string(),
            arn,
            tags: BTreeMap::new(),
        }
    }
}

/// IAM's wildcards: `*` any run of characters, `?` any one.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t) = (0, 0);
    // The last `*` seen, and where in the text it began to match.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((s, from)) = star {
            // Let that `*` take one more character.
            star = Some((s, from + 1));
            p = s + 1;
            t = from + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl Stack {
    fn new(overrides: &[(&str, &str)]) -> Stack {
        Stack::named(STACK, overrides)
    }

    fn named(name: &str, overrides: &[(&str, &str)]) -> Stack {
        let path = pacer_test_support::in_repo("template.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let doc: Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
        let mut parameters: BTreeMap<String, String> = doc
            .at("Parameters")
            .as_mapping()
            .unwrap()
            .iter()
            .filter_map(|(name, p)| {
                Some((
                    name.as_str()?.to_string(),
                    scalar(p.as_mapping()?.get("Default")?)?,
                ))
            })
            .collect();
        for (name, value) in overrides {
            assert!(
                doc.at("Parameters")
                    .as_mapping()
                    .unwrap()
                    .contains_key(*name),
                "no parameter {name}"
            );
            parameters.insert(name.to_string(), value.to_string());
        }
        Stack {
            doc,
            parameters,
            name: name.to_string(),
        }
    }

    fn resource(&self, name: &str) -> &Value {
        self.doc
            .at("Resources")
            .as_mapping()
            .unwrap()
            .get(name)
            .unwrap_or_else(|| panic!("no resource {name}"))
    }

    fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.doc
            .at("Resources")
            .as_mapping()
            .unwrap()
            .iter()
            .filter(move |(_, r)| r.text("Type") == kind)
            .map(|(name, r)| (name.as_str().unwrap(), r))
    }

    fn output(&self, name: &str) -> String {
        let value = self.doc.at("Outputs").at(name).at("Value");
        self.eval(value).as_str().unwrap().to_string()
    }

    /// The function's variables over the global ones, as Lambda gets them.
    fn environment(&self, function: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let global = self
            .doc
            .at("Globals")
            .at("Function")
            .at("Environment")
            .at("Variables");
        let own = self
            .resource(function)
            .at("Properties")
            .as_mapping()
            .unwrap()
            .get("Environment");
        let own = own.map(|e| e.at("Variables"));
        for vars in [Some(global), own].into_iter().flatten() {
            for (key, value) in vars.as_mapping().unwrap() {
                let value = self.eval(value);
                if value.is_null() {
                    continue; // AWS::NoValue: the variable is left out
                }
                env.insert(
                    key.as_str().unwrap().to_string(),
                    scalar(&value).unwrap_or_else(|| panic!("{key:?} is not a scalar")),
                );
            }
        }
        env
    }

    /// The role a function runs as (`Role: !GetAtt XRole.Arn`).
    fn role_of(&self, function: &str) -> String {
        let role = self.eval(self.resource(function).at("Properties").at("Role"));
        role.as_str()
            .unwrap()
            .trim_start_matches("getatt-")
            .trim_end_matches("-Arn")
            .to_string()
    }

    /// The values `envsubst` would give infra/iam's placeholders for this
    /// deployment.
    fn placeholder_values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCOUNT_ID", ACCOUNT.to_string()),
            ("PACER_STACK", self.name.clone()),
            ("PACER_SECRETS_PATH", self.parameters["SecretsPath"].clone()),
            (
                "PACER_DEPLOYMENT",
                self.parameters["DeploymentName"].clone(),
            ),
            (
                "PACER_AMI_PREFIX",
                self.parameters["AmiParameterPrefix"].clone(),
            ),
        ]
    }

    /// `resource` with the stand-in it starts with (`getatt-X-Arn`, `ref-X`)
    /// replaced by the ARN CloudFormation would give X ([`Stack::arn_of`]).
    fn deployed_arn(&self, resource: &str) -> String {
        let (name, rest) = if let Some(getatt) = resource.strip_prefix("getatt-") {
            getatt
                .split_once("-Arn")
                .unwrap_or_else(|| panic!("{resource}: only an Arn names a resource"))
        } else if let Some(reference) = resource.strip_prefix("ref-") {
            reference.split_at(
                reference
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .unwrap_or(reference.len()),
            )
        } else {
            return resource.to_string();
        };
        format!("{}{rest}", self.arn_of(name))
    }

    /// The ARN CloudFormation gives resource `name` (its `Arn`, or its `Ref`
    /// where that is the ARN): under its own name where the template sets
    /// one, else under one made of the stack's name, the logical ID and a
    /// random suffix, as CloudFormation makes it; IAM's under their path.
    fn arn_of(&self, name: &str) -> String {
        let resource = self.resource(name);
        let properties = resource.at("Properties").as_mapping().unwrap();
        let own = |key: &str| properties.get(key).map(|v| scalar(&self.eval(v)).unwrap());
        let named =
            |key: &str| own(key).unwrap_or_else(|| format!("{}-{name}-1A2B3C4D5E6F", self.name));
        let iam = |kind: &str, key: &str| {
            format!(
                "arn:aws:iam::{ACCOUNT}:{kind}{}{}",
                own("Path").unwrap_or_else(|| "/".into()),
                named(key)
            )
        };
        match resource.text("Type") {
            "AWS::DynamoDB::Table" => format!(
                "arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}",
                named("TableName")
            ),
            "AWS::SQS::Queue" => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", named("QueueName")),
            "AWS::Logs::LogGroup" => format!(
                "arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{}:*",
                named("LogGroupName")
            ),
            "AWS::IAM::Role" => iam("role", "RoleName"),
            "AWS::IAM::ManagedPolicy" => iam("policy", "ManagedPolicyName"),
            "AWS::IAM::InstanceProfile" => iam("instance-profile", "InstanceProfileName"),
            // Secrets Manager adds six characters of its own.
            "AWS::SecretsManager::Secret" => format!(
                "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{}-AbCdEf",
                named("Name")
            ),
            // A bucket's name is lower case, a generated one too.
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{}", named("BucketName").to_lowercase()),
            "AWS::Serverless::Function" => format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}",
                named("FunctionName")
            ),
            "AWS::CloudFront::Function" => {
                format!("arn:aws:cloudfront::{ACCOUNT}:function/{}", named("Name"))
            }
            // An ID CloudFront makes up.
            "AWS::CloudFront::Distribution" => {
                format!(
                    "arn:aws:cloudfront::{ACCOUNT}:distribution/E{}",
                    self.name.to_uppercase().replace('-', "")
                )
            }
            other => panic!("{name}: the test does not know the ARN of an {other}"),
        }
    }

    /// Every ARN by which a policy may name what this stack makes, with the
    /// tags it carries: the stack, each resource and what it holds (a
    /// table's indexes, a log group's streams, a bucket's objects, a
    /// function's versions), and the rule SAM makes for a schedule.
    /// Resources AWS knows by an ID it makes up and that carry no tag (the
    /// HTTP API and its parts, origin access controls, origin request
    /// policies, SAM's event source mappings) no policy can tell apart
    /// (infra/README.md); they are left out.
    fn every_arn(&self) -> Vec<Owned> {
        let mut owned = vec![Owned::new(
            "the stack",
            format!(
                "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{}/0a1b2c3d",
                self.name
            ),
        )];
        let resources = self.doc.at("Resources").as_mapping().unwrap();
        for (name, resource) in resources.iter().map(|(n, r)| (n.as_str().unwrap(), r)) {
            if resource
                .as_mapping()
                .unwrap()
                .get("Condition")
                .is_some_and(|c| !self.condition(c.as_str().unwrap()))
            {
                continue;
            }
            let held: Vec<String> = match resource.text("Type") {
                "AWS::ApiGatewayV2::Api"
                | "AWS::ApiGatewayV2::Stage"
                | "AWS::ApiGatewayV2::Integration"
                | "AWS::ApiGatewayV2::Route"
                | "AWS::CloudFront::OriginAccessControl"
                | "AWS::CloudFront::OriginRequestPolicy"
                | "AWS::CloudFront::CachePolicy" => continue,
                // Parts of a function's and a bucket's ARN.
                "AWS::Lambda::Permission" | "AWS::S3::BucketPolicy" => continue,
                "AWS::DynamoDB::Table" => {
                    let indexes = resource
                        .at("Properties")
                        .at("GlobalSecondaryIndexes")
                        .items();
                    indexes
                        .iter()
                        .map(|i| format!("/index/{}", i.text("IndexName")))
                        .collect()
                }
                "AWS::Logs::LogGroup" => vec![
                    String::new(),
                    ":log-stream:2026/11/22/[$LATEST]0a1b2c3d".into(),
                ],
                "AWS::S3::Bucket" => vec!["/index.html".into()],
                "AWS::Serverless::Function" => vec![":1".into()],
                _ => Vec::new(),
            };
            let arn = self.arn_of(name);
            let tags: BTreeMap<String, String> = resource
                .at("Properties")
                .as_mapping()
                .unwrap()
                .get("Tags")
                .map(|tags| {
                    self.eval(tags)
                        .items()
                        .iter()
                        .map(|t| (t.text("Key").to_string(), t.text("Value").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let base = arn.strip_suffix(":*").unwrap_or(&arn).to_string();
            owned.extend(held.iter().map(|part| Owned {
                resource: name.to_string(),
                arn: format!("{base}{part}"),
                tags: tags.clone(),
            }));
            owned.push(Owned {
                resource: name.to_string(),
                arn,
                tags,
            });

            let events = resource
                .at("Properties")
                .as_mapping()
                .unwrap()
                .get("Events")
                .and_then(|e| e.as_mapping());
            for (event, source) in events.into_iter().flatten() {
                if source.text("Type") == "Schedule" {
                    let rule = source
                        .at("Properties")
                        .as_mapping()
                        .unwrap()
                        .get("Name")
                        .map(|n| scalar(&self.eval(n)).unwrap());
                    let rule = rule.unwrap_or_else(|| {
                        format!(
                            "{}-{name}{}-1A2B3C4D5E6F",
                            self.name,
                            event.as_str().unwrap()
                        )
                    });
                    owned.push(Owned::new(
                        name,
                        format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"),
                    ));
                }
            }
        }
        owned
    }

    /// The AWS managed policies a role of the template may attach, with
    /// every option on.
    fn aws_managed_policies() -> BTreeSet<String> {
        let mut parameters = everything_on();
        parameters.push(("RunnerSsmAccess", "true"));
        let stack = Stack::new(&parameters);
        stack
            .resources_of_type("AWS::IAM::Role")
            .filter_map(|(_, role)| {
                role.at("Properties")
                    .as_mapping()
                    .unwrap()
                    .get("ManagedPolicyArns")
            })
            .flat_map(|arns| stack.eval(arns).as_sequence().cloned().unwrap_or_default())
            .filter_map(|arn| scalar(&arn))
            .filter(|arn| !arn.starts_with("ref-"))
            .collect()
    }

    /// Every statement a role holds: inline policies and the managed
    /// policies of this template it attaches.
    fn role_statements(&self, role: &str) -> Vec<Statement> {
        let props = self.resource(role).at("Properties");
        let props = props.as_mapping().unwrap();
        let mut documents: Vec<Value> = Vec::new();
        if let Some(inline) = props.get("Policies") {
            documents.extend(
                inline
                    .items()
                    .iter()
                    .map(|p| p.at("PolicyDocument").clone()),
            );
        }
        if let Some(managed) = props.get("ManagedPolicyArns") {
            for arn in self.eval(managed).as_sequence().into_iter().flatten() {
                let name = arn
                    .as_str()
                    .unwrap()
                    .strip_prefix("ref-")
                    .expect("a managed policy of this template");
                documents.push(
                    self.resource(name)
                        .at("Properties")
                        .at("PolicyDocument")
                        .clone(),
                );
            }
        }
        documents
            .iter()
            .flat_map(|d| {
                self.eval(d.at("Statement"))
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| !s.is_null())
            .map(|s| {
                let list = |v: Option<&Value>| -> Vec<String> {
                    match v {
                        None => Vec::new(),
                        Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
                        Some(other) => scalar(other).into_iter().collect(),
                    }
                };
                let map = s.as_mapping().unwrap();
                Statement {
                    effect: map.get("Effect").and_then(scalar).unwrap_or_default(),
                    actions: list(map.get("Action")),
                    resources: list(map.get("Resource")),
                    condition: map.get("Condition").cloned().unwrap_or(Value::Null),
                }
            })
            .collect()
    }

    /// Evaluates intrinsic functions; `Null` stands for `AWS::NoValue`
    /// (dropped from sequences and mappings, as CloudFormation does).
    fn eval(&self, value: &Value) -> Value {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                self.intrinsic(tag.trim_start_matches('!'), &tagged.value)
            }
            Value::Mapping(map) if map.len() == 1 && intrinsic_key(map).is_some() => {
                let (name, arg) = intrinsic_key(map).unwrap();
                self.intrinsic(name, arg)
            }
            Value::Mapping(map) => {
                let mut out = Mapping::new();
                for (k, v) in map {
                    let v = self.eval(v);
                    if !v.is_null() {
                        out.insert(k.clone(), v);
                    }
                }
                Value::Mapping(out)
            }
            Value::Sequence(items) => Value::Sequence(
                items
                    .iter()
                    .map(|v| self.eval(v))
                    .filter(|v| !v.is_null())
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn intrinsic(&self, name: &str, arg: &Value) -> Value {
        match name {
            "Ref" => self.reference(arg.as_str().unwrap()),
            "GetAtt" => {
                let path = match arg {
                    Value::Sequence(parts) => parts
                        .iter()
                        .map(|p| p.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join("."),
                    other => other.as_str().unwrap().to_string(),
                };
                Value::String(format!("getatt-{}", path.replace('.', "-")))
            }
            "Sub" => {
                let (text, vars) = match arg {
                    Value::Sequence(parts) => {
                        (parts[0].as_str().unwrap(), Some(self.eval(&parts[1])))
                    }
                    other => (other.as_str().unwrap(), None),
                };
                Value::String(self.substitute(text, vars.as_ref()))
            }
            "If" => {
                let parts = arg.items();
                let chosen = if self.condition(parts[0].as_str().unwrap()) {
                    &parts[1]
                } else {
                    &parts[2]
                };
                self.eval(chosen)
            }
            "Equals" => {
                let parts = arg.items();
                Value::Bool(scalar(&self.eval(&parts[0])) == scalar(&self.eval(&parts[1])))
            }
            "Not" => Value::Bool(!self.truth(&arg.items()[0])),
            "And" => Value::Bool(arg.items().iter().all(|c| self.truth(c))),
            "Or" => Value::Bool(arg.items().iter().any(|c| self.truth(c))),
            "Condition" => Value::Bool(self.condition(arg.as_str().unwrap())),
            other => panic!("the test's evaluator does not know Fn::{other}"),
        }
    }

    fn truth(&self, value: &Value) -> bool {
        match self.eval(value) {
            Value::Bool(b) => b,
            other => panic!("not a condition: {other:?}"),
        }
    }

    fn condition(&self, name: &str) -> bool {
        let definition = self
            .doc
            .at("Conditions")
            .as_mapping()
            .unwrap()
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"));
        self.truth(definition)
    }

    fn reference(&self, name: &str) -> Value {
        match name {
            "AWS::NoValue" => Value::Null,
            "AWS::Region" => Value::String(REGION.into()),
            "AWS::AccountId" => Value::String(ACCOUNT.into()),
            "AWS::Partition" => Value::String("aws".into()),
            "AWS::URLSuffix" => Value::String("amazonaws.com".into()),
            "AWS::StackName" => Value::String(self.name.clone()),
            _ => match self.parameters.get(name) {
                Some(value) => Value::String(value.clone()),
                None => {
                    let resource = self.doc.at("Resources").as_mapping().unwrap().get(name);
                    let resource = resource.unwrap_or_else(|| {
                        panic!("Ref {name}: no parameter with a value, and no resource")
                    });
                    // What Ref gives where the code checks its shape: a queue's URL.
                    match resource.text("Type") {
                        "AWS::SQS::Queue" => Value::String(format!(
                            "https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/ref-{name}"
                        )),
                        _ => Value::String(format!("ref-{name}")),
                    }
                }
            },
        }
    }

    /// `${Name}`, `${Name.Attr}` and `${AWS::…}` in a `!Sub` string.
    fn substitute(&self, text: &str, vars: Option<&Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("a closed ${…}") + start;
            let name = &rest[start + 2..end];
            let value = match vars.and_then(|v| v.as_mapping()).and_then(|m| m.get(name)) {
                Some(v) => scalar(v).unwrap(),
                None if name.contains('.') && !name.starts_with("AWS::") => {
                    format!("getatt-{}", name.replace('.', "-"))
                }
                None => scalar(&self.reference(name)).unwrap(),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn intrinsic_key(map: &Mapping) -> Option<(&str, &Value)> {
    let (key, value) = map.iter().next()?;
    let key = key.as_str()?;
    let name = if key == "Ref" {
        "Ref"
    } else {
        key.strip_prefix("Fn::")?
    };
    Some((name, value))
}

/// A scalar as CloudFormation would pass it: text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Terse, panicking access for a test that knows the template's shape.
trait Yaml {
    fn at(&self, key: &str) -> &Value;
    fn text(&self, key: &str) -> &str;
    fn items(&self) -> &Vec<Value>;
}

impl Yaml for Value {
    fn at(&self, key: &str) -> &Value {
        self.as_mapping()
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    fn text(&self, key: &str) -> &str {
        self.at(key)
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not a string"))
    }

    fn items(&self) -> &Vec<Value> {
        self.as_sequence()
            .unwrap_or_else(|| panic!("not a sequence: {self:?}"))
    }
}
