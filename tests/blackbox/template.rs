//! `template.yaml` held to the code it deploys. cfn-lint and `sam validate
//! --lint` (run by `make test` before cargo) say the template is valid
//! CloudFormation; these tests say it is the right one for pacer: the table
//! has the keys and indexes `DynamoStore::create_table` makes, every
//! function's environment is a configuration pacer accepts, each role may
//! read exactly the secrets its function names and nothing runs with more
//! EC2 or IAM reach than its code needs, the routes send each path to its
//! function, and the console can never turn an API error into a page.
//!
//! The template is read as YAML; CloudFormation's short tags (`!Ref`,
//! `!Sub`, `!If`, …) arrive as tagged values, and [`Stack`] evaluates them
//! the way CloudFormation would for one set of parameters, with stand-ins
//! for what only exists once deployed (`ref-Name`, `getatt-Name-Attr`: host-safe, so URLs built from them parse).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::Client;
use pacer_shared::config::{Config, Role};
use pacer_shared::lambda::Kind;
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
fn kind_of(function: &str) -> Kind {
    match function {
        "WebhookFunction" => Kind::Webhook,
        "ApiFunction" => Kind::Api,
        "RunnerFunction" => Kind::Runner,
        "OrchestratorFunction" => Kind::Orchestrator,
        "ReaperFunction" => Kind::Reaper,
        other => panic!("{other} is not one of pacer's functions"),
    }
}

/// The parameters of a deployment with every option at its default.
fn defaults() -> Vec<(&'static str, &'static str)> {
    vec![("GitHubAppId", "123456")]
}

/// Every optional secret in use, from Secrets Manager, with SSO and a
/// custom console domain.
fn everything_on() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GitHubAppId", "123456"),
        ("SecretStore", "secretsmanager"),
        ("SecretsPath", "teams/ci/pacer"),
        ("SecretsKmsKeyArn", "arn:aws:kms:us-east-1:123456789012:key/abcd"),
        ("UsePreviousWebhookSecret", "true"),
        ("OidcIssuer", "https://idp.example.com/realms/ci"),
        ("OidcClientId", "pacer"),
        ("OidcAllowedDomains", "example.com,example.org"),
        ("OidcGroupsClaim", "groups"),
        ("OidcAdminGroups", "ci-admins"),
        ("ConsoleDomainName", "pacer.example.com"),
        ("ConsoleCertificateArn", "arn:aws:acm:us-east-1:123456789012:certificate/x"),
    ]
}

// ---------------------------------------------------------------------- the table

#[tokio::test]
async fn the_table_has_the_keys_and_indexes_the_store_creates() {
    // Given the table exactly as the store's own create_table makes it
    let moto = Moto::start().await;
    let client = Client::new(&moto.sdk_config().await);
    DynamoStore::new(client.clone(), "pacer-template".into()).create_table().await.expect("create the table on moto");
    let described = client.describe_table().table_name("pacer-template").send().await.unwrap();
    let created = described.table().unwrap();
    let ttl = client.describe_time_to_live().table_name("pacer-template").send().await.unwrap();

    // When the template's table is read
    let stack = Stack::new(&defaults());
    let table = stack.resource("StateTable");
    assert_eq!(table.text("Type"), "AWS::DynamoDB::Table");
    let props = table.at("Properties");

    // Then the keys, the attribute types and every index are the same
    let key_schema = |v: &Value| -> Vec<(String, String)> {
        v.items().iter().map(|k| (k.text("AttributeName").to_string(), k.text("KeyType").to_string())).collect()
    };
    let sdk_keys = |keys: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        keys.iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect()
    };
    assert_eq!(key_schema(props.at("KeySchema")), sdk_keys(created.key_schema()), "the table's own key");

    let attributes: BTreeSet<(String, String)> = props
        .at("AttributeDefinitions")
        .items()
        .iter()
        .map(|a| (a.text("AttributeName").to_string(), a.text("AttributeType").to_string()))
        .collect();
    let created_attributes: BTreeSet<(String, String)> = created
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_string(), a.attribute_type().as_str().to_string()))
        .collect();
    assert_eq!(attributes, created_attributes, "attribute definitions");

    let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = props
        .at("GlobalSecondaryIndexes")
        .items()
        .iter()
        .map(|i| {
            (i.text("IndexName").to_string(), (key_schema(i.at("KeySchema")), i.at("Projection").text("ProjectionType").to_string()))
        })
        .collect();
    let created_indexes: BTreeMap<String, (Vec<(String, String)>, String)> = created
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let projection = i.projection().and_then(|p| p.projection_type()).map(|p| p.as_str().to_string()).unwrap_or_default();
            (i.index_name().unwrap_or_default().to_string(), (sdk_keys(i.key_schema()), projection))
        })
        .collect();
    assert_eq!(indexes, created_indexes, "global secondary indexes");

    // …billed on demand, expiring items by the store's TTL attribute, with
    // point-in-time recovery and deletion protection from the parameter
    assert_eq!(props.text("BillingMode"), "PAY_PER_REQUEST");
    assert_eq!(
        created.billing_mode_summary().and_then(|b| b.billing_mode()).map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let template_ttl = props.at("TimeToLiveSpecification");
    assert_eq!(Some(template_ttl.text("AttributeName")), ttl.time_to_live_description().and_then(|d| d.attribute_name()));
    assert_eq!(template_ttl.at("Enabled"), &Value::Bool(true));
    assert_eq!(props.at("PointInTimeRecoverySpecification").at("PointInTimeRecoveryEnabled"), &Value::Bool(true));
    assert_eq!(stack.eval(props.at("DeletionProtectionEnabled")).as_str(), Some("true"));
    assert_eq!(
        Stack::new(&[("GitHubAppId", "1"), ("DeletionProtection", "false")]).eval(props.at("DeletionProtectionEnabled")).as_str(),
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
                env.keys().all(|k| k.starts_with("PACER_") || k == "SECRETS_GENERATION"),
                "{function}: only PACER_* keys, got {:?}",
                env.keys()
            );

            // Then pacer's own loader accepts it as a whole configuration…
            let vars: Vec<(String, String)> = env.clone().into_iter().collect();
            let cfg = Config::load_for(kind_of(function).role(), None, &vars)
                .unwrap_or_else(|e| panic!("{function} with {parameters:?} would not start: {e}"));
            assert_eq!(cfg.aws.region, REGION, "{function}: the function's own region");
            assert_eq!(cfg.database.table, format!("ref-{}", "StateTable"));

            // …and no secret sits in it in clear: each is a reference
            for (key, value) in &env {
                if key.starts_with("PACER_") && (key.contains("SECRET") || key.contains("PRIVATE_KEY")) {
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
            assert_eq!(public, "https://getatt-ConsoleDistribution-DomainName", "the api is reached through CloudFront");
            assert!(env.contains_key("PACER_SERVER_CLOUDFRONT_ORIGIN_SECRET"));
        } else {
            assert_eq!(public, api_url, "{function}");
        }
    }
    assert_eq!(stack.output("WebhookUrl"), format!("{api_url}/api/webhook"));
    assert_eq!(stack.output("ConsoleUrl"), "https://getatt-ConsoleDistribution-DomainName");

    let custom = Stack::new(&everything_on());
    let env = custom.environment("ApiFunction");
    assert_eq!(env["PACER_SERVER_PUBLIC_URL"], "https://pacer.example.com");
    assert_eq!(env["PACER_AUTH_OIDC_REDIRECT_URL"], "https://pacer.example.com/api/auth/oidc/callback");
    assert_eq!(custom.output("ConsoleUrl"), "https://pacer.example.com");
}

#[test]
fn each_function_is_given_only_the_secrets_its_own_work_needs() {
    // Every role-dependent secret, as the variable that names it.
    let core = Role::Serve.secret_env_vars();
    for parameters in [defaults(), everything_on()] {
        let stack = Stack::new(&parameters);
        for (function, _) in FUNCTIONS {
            let env = stack.environment(function);
            let given: Vec<String> = core.iter().filter(|var| env.contains_key(*var)).cloned().collect();
            assert_eq!(given, kind_of(function).role().secret_env_vars(), "{function} with {parameters:?}");
        }
    }
    // The orchestrator, which only launches, cannot read the App key at all.
    let stack = Stack::new(&defaults());
    assert!(!stack
        .role_statements(&stack.role_of("OrchestratorFunction"))
        .iter()
        .flat_map(|s| &s.resources)
        .any(|r| r.contains("github-private-key")));
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
                        .filter(|a| matches!(a.as_str(), "ssm:GetParameter" | "ssm:GetParameters" | "secretsmanager:GetSecretValue"))
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
        return Some(("ssm:GetParameter".into(), format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}")));
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
                assert!(!action.ends_with('*'), "{role}: no wildcard action ({action})");
                match action.as_str() {
                    "iam:PassRole" => {
                        assert_eq!(function, "OrchestratorFunction", "only the orchestrator passes a role");
                        assert_eq!(s.resources, ["getatt-RunnerRole-Arn"], "the runner role and nothing else");
                    }
                    "ec2:RunInstances" => assert_eq!(function, "OrchestratorFunction"),
                    "ec2:TerminateInstances" | "ec2:DeleteLaunchTemplate" | "ec2:ModifyLaunchTemplate"
                    | "ec2:CreateLaunchTemplateVersion" => {
                        assert_eq!(
                            s.condition("aws:ResourceTag/pacer:deployment").as_deref(),
                            Some("pacer"),
                            "{role}: {action} only on this deployment's resources"
                        );
                    }
                    "ec2:CreateLaunchTemplate" => {
                        assert_eq!(s.condition("aws:RequestTag/pacer:deployment").as_deref(), Some("pacer"));
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
    let instance = launches.iter().find(|s| s.resources.iter().any(|r| r.contains(":instance/"))).expect("an instance grant");
    assert_eq!(instance.condition("aws:RequestTag/pacer:deployment").as_deref(), Some("pacer"));
    // The runner callbacks never touch EC2.
    assert!(stack.role_statements("RunnerFunctionRole").iter().all(|s| s.actions.iter().all(|a| !a.starts_with("ec2:"))));
    // Each function writes only its own log group.
    for (function, binary) in FUNCTIONS {
        let logs: Vec<String> = stack
            .role_statements(&stack.role_of(function))
            .into_iter()
            .filter(|s| s.actions.iter().any(|a| a == "logs:PutLogEvents"))
            .flat_map(|s| s.resources)
            .collect();
        let group = stack.resource(&format!("{}Logs", &function[..function.len() - "Function".len()]));
        assert_eq!(stack.eval(group.at("Properties").at("LogGroupName")).as_str(), Some(format!("/aws/lambda/{STACK}-{binary}").as_str()));
        assert_eq!(logs.len(), 1, "{function}: one log group");
        assert!(logs[0].starts_with("getatt-") && logs[0].ends_with("Logs-Arn"), "{function}: {logs:?}");
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
            let integration = target.as_str().unwrap().strip_prefix("integrations/ref-").unwrap().to_string();
            let uri = stack.eval(stack.resource(&integration).at("Properties").at("IntegrationUri"));
            let function = uri.as_str().unwrap().trim_start_matches("getatt-").trim_end_matches("-Arn").to_string();
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
        let manifest = format!("{}/../{binary}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{manifest}: {e}"));
        assert!(manifest.contains(&format!("[[bin]]\nname = \"{binary}\"")), "functions/{binary} builds the {binary} binary");
    }
    let globals = stack.doc.at("Globals").at("Function");
    assert_eq!(globals.text("Runtime"), "provided.al2023");
    assert_eq!(stack.eval(&globals.at("Architectures").items()[0]).as_str(), Some("arm64"));
}

#[test]
fn the_queue_outlasts_six_orchestrator_timeouts_and_dead_letters_only_after_pacer_gives_up() {
    let stack = Stack::new(&defaults());
    let queue = stack.resource("JobsQueue").at("Properties");
    let orchestrator = stack.resource("OrchestratorFunction").at("Properties");
    let timeout = orchestrator.at("Timeout").as_u64().unwrap();
    let visibility = queue.at("VisibilityTimeout").as_u64().unwrap();
    assert!(visibility >= 6 * timeout, "visibility {visibility}s must be at least 6 x the {timeout}s timeout");

    let redrive = queue.at("RedrivePolicy");
    assert!(
        redrive.at("maxReceiveCount").as_u64().unwrap() > u64::from(POISON_RECEIVES),
        "the orchestrator fails a job after {POISON_RECEIVES} deliveries; the DLQ must not take it first"
    );
    assert_eq!(stack.eval(redrive.at("deadLetterTargetArn")).as_str(), Some("getatt-JobsDeadLetterQueue-Arn"));

    let event = orchestrator.at("Events").at("Jobs");
    assert_eq!(event.text("Type"), "SQS");
    assert_eq!(stack.eval(event.at("Properties").at("Queue")).as_str(), Some("getatt-JobsQueue-Arn"));
    assert_eq!(event.at("Properties").at("FunctionResponseTypes").items()[0].as_str(), Some("ReportBatchItemFailures"));

    let schedule = stack.resource("ReaperFunction").at("Properties").at("Events").at("Schedule");
    assert_eq!(schedule.text("Type"), "Schedule");
    assert_eq!(stack.eval(schedule.at("Properties").at("Schedule")).as_str(), Some("rate(1 minute)"));
    // One pass at a time, and a dropped one is not replayed.
    let reaper = stack.resource("ReaperFunction").at("Properties");
    assert_eq!(reaper.at("ReservedConcurrentExecutions").as_u64(), Some(1));
    assert_eq!(reaper.at("EventInvokeConfig").at("MaximumRetryAttempts").as_u64(), Some(0));
}

// ---------------------------------------------------------------------- console

#[test]
fn deep_links_load_the_console_but_api_errors_stay_json() {
    let stack = Stack::new(&defaults());
    let config = stack.resource("ConsoleDistribution").at("Properties").at("DistributionConfig");
    assert!(
        config.as_mapping().unwrap().get("CustomErrorResponses").is_none(),
        "distribution-wide error pages would turn the API's 404s and 401s into index.html"
    );
    let default = config.at("DefaultCacheBehavior");
    assert_eq!(default.text("TargetOriginId"), "console");
    let rewrite = &default.at("FunctionAssociations").items()[0];
    assert_eq!(stack.eval(rewrite.at("FunctionARN")).as_str(), Some("getatt-SpaRewriteFunction-FunctionMetadata-FunctionARN"));

    let behaviours: BTreeMap<&str, &Value> = config.at("CacheBehaviors").items().iter().map(|b| (b.text("PathPattern"), b)).collect();
    assert_eq!(behaviours.keys().copied().collect::<Vec<_>>(), ["/api/*", "/healthz"]);
    for (path, behaviour) in behaviours {
        assert_eq!(behaviour.text("TargetOriginId"), "api", "{path}");
        assert!(behaviour.as_mapping().unwrap().get("FunctionAssociations").is_none(), "{path}: no SPA rewrite");
        assert_eq!(behaviour.text("CachePolicyId"), "4135ea2d-6df8-44a3-9df3-4b5a84be39ad", "{path}: never cached");
        assert_eq!(stack.eval(behaviour.at("OriginRequestPolicyId")).as_str(), Some("ref-ApiOriginRequestPolicy"), "{path}");
    }
    // The API sees the session cookie and the viewer's address, and never
    // the viewer's Host (API Gateway answers only to its own name).
    let forwarded = stack.resource("ApiOriginRequestPolicy").at("Properties").at("OriginRequestPolicyConfig");
    assert_eq!(forwarded.at("CookiesConfig").text("CookieBehavior"), "all");
    let headers = forwarded.at("HeadersConfig");
    assert_eq!(headers.text("HeaderBehavior"), "whitelist");
    let names: Vec<&str> = headers.at("Headers").items().iter().filter_map(|h| h.as_str()).collect();
    assert!(names.contains(&"CloudFront-Viewer-Address"), "{names:?}");
    assert!(!names.iter().any(|h| h.eq_ignore_ascii_case("host")), "{names:?}");

    // The api origin proves itself with the generated secret, which the api
    // function is told to expect.
    let api_origin = config.at("Origins").items().iter().find(|o| o.text("Id") == "api").unwrap();
    let header = &api_origin.at("OriginCustomHeaders").items()[0];
    assert_eq!(header.text("HeaderName"), "X-Pacer-Origin-Secret");
    assert_eq!(
        stack.eval(header.at("HeaderValue")).as_str(),
        Some("{{resolve:secretsmanager:ref-CloudFrontOriginSecret:SecretString}}")
    );
    assert_eq!(stack.environment("ApiFunction")["PACER_SERVER_CLOUDFRONT_ORIGIN_SECRET"], "secretsmanager:ref-CloudFrontOriginSecret");

    // The bucket is private: CloudFront reads it through origin access control.
    let bucket = stack.resource("ConsoleBucket").at("Properties").at("PublicAccessBlockConfiguration");
    for flag in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"] {
        assert_eq!(bucket.at(flag), &Value::Bool(true), "{flag}");
    }
    let console_origin = config.at("Origins").items().iter().find(|o| o.text("Id") == "console").unwrap();
    assert_eq!(stack.eval(console_origin.at("OriginAccessControlId")).as_str(), Some("getatt-ConsoleOriginAccess-Id"));
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

    let policy = iam_document("pacer-single-binary-policy.json");
    let statements = policy["Statement"].as_array().unwrap();
    let actions = |s: &serde_json::Value| -> Vec<String> {
        match &s["Action"] {
            serde_json::Value::String(a) => vec![a.clone()],
            list => list.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
        }
    };
    let allowed: BTreeSet<String> = statements.iter().flat_map(actions).collect();
    let missing: Vec<&String> = functions.difference(&allowed).collect();
    assert!(missing.is_empty(), "`pacer serve` would lack {missing:?}");

    for s in statements {
        if actions(s).iter().any(|a| a == "iam:PassRole") {
            assert_eq!(s["Resource"], "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${PACER_RUNNER_ROLE}", "the runner role alone");
        }
        if actions(s).iter().any(|a| a == "ec2:TerminateInstances") {
            assert_eq!(s["Condition"]["StringEquals"]["aws:ResourceTag/pacer:deployment"], "${PACER_DEPLOYMENT}");
        }
    }
}

#[test]
fn the_policy_documents_are_json_with_known_placeholders() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/iam");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc["Version"], "2012-10-17", "{name}");
        for placeholder in text.split("${").skip(1).map(|rest| &rest[..rest.find('}').unwrap()]) {
            assert!(
                PLACEHOLDERS.contains(&placeholder),
                "{name}: unknown placeholder ${{{placeholder}}}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "the runner, single-binary, deployer and boundary documents");
}

fn iam_document(name: &str) -> serde_json::Value {
    let path = format!("{}/../../infra/iam/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------- the evaluator

/// The template with one set of parameter values.
struct Stack {
    doc: Value,
    parameters: BTreeMap<String, String>,
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
        self.condition.as_mapping()?.values().find_map(|tests| tests.as_mapping()?.get(key)).and_then(scalar)
    }
}

impl Stack {
    fn new(overrides: &[(&str, &str)]) -> Stack {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let doc: Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
        let mut parameters: BTreeMap<String, String> = doc
            .at("Parameters")
            .as_mapping()
            .unwrap()
            .iter()
            .filter_map(|(name, p)| Some((name.as_str()?.to_string(), scalar(p.as_mapping()?.get("Default")?)?)))
            .collect();
        for (name, value) in overrides {
            assert!(doc.at("Parameters").as_mapping().unwrap().contains_key(*name), "no parameter {name}");
            parameters.insert(name.to_string(), value.to_string());
        }
        Stack { doc, parameters }
    }

    fn resource(&self, name: &str) -> &Value {
        self.doc.at("Resources").as_mapping().unwrap().get(name).unwrap_or_else(|| panic!("no resource {name}"))
    }

    fn resources_of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
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
        let global = self.doc.at("Globals").at("Function").at("Environment").at("Variables");
        let own = self.resource(function).at("Properties").as_mapping().unwrap().get("Environment");
        let own = own.map(|e| e.at("Variables"));
        for vars in [Some(global), own].into_iter().flatten() {
            for (key, value) in vars.as_mapping().unwrap() {
                let value = self.eval(value);
                if value.is_null() {
                    continue; // AWS::NoValue: the variable is left out
                }
                env.insert(key.as_str().unwrap().to_string(), scalar(&value).unwrap_or_else(|| panic!("{key:?} is not a scalar")));
            }
        }
        env
    }

    /// The role a function runs as (`Role: !GetAtt XRole.Arn`).
    fn role_of(&self, function: &str) -> String {
        let role = self.eval(self.resource(function).at("Properties").at("Role"));
        role.as_str().unwrap().trim_start_matches("getatt-").trim_end_matches("-Arn").to_string()
    }

    /// Every statement a role holds: inline policies and the managed
    /// policies of this template it attaches.
    fn role_statements(&self, role: &str) -> Vec<Statement> {
        let props = self.resource(role).at("Properties");
        let props = props.as_mapping().unwrap();
        let mut documents: Vec<Value> = Vec::new();
        if let Some(inline) = props.get("Policies") {
            documents.extend(inline.items().iter().map(|p| p.at("PolicyDocument").clone()));
        }
        if let Some(managed) = props.get("ManagedPolicyArns") {
            for arn in self.eval(managed).as_sequence().into_iter().flatten() {
                let name = arn.as_str().unwrap().strip_prefix("ref-").expect("a managed policy of this template");
                documents.push(self.resource(name).at("Properties").at("PolicyDocument").clone());
            }
        }
        documents
            .iter()
            .flat_map(|d| self.eval(d.at("Statement")).as_sequence().cloned().unwrap_or_default())
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
            Value::Sequence(items) => Value::Sequence(items.iter().map(|v| self.eval(v)).filter(|v| !v.is_null()).collect()),
            other => other.clone(),
        }
    }

    fn intrinsic(&self, name: &str, arg: &Value) -> Value {
        match name {
            "Ref" => self.reference(arg.as_str().unwrap()),
            "GetAtt" => {
                let path = match arg {
                    Value::Sequence(parts) => parts.iter().map(|p| p.as_str().unwrap()).collect::<Vec<_>>().join("."),
                    other => other.as_str().unwrap().to_string(),
                };
                Value::String(format!("getatt-{}", path.replace('.', "-")))
            }
            "Sub" => {
                let (text, vars) = match arg {
                    Value::Sequence(parts) => (parts[0].as_str().unwrap(), Some(self.eval(&parts[1]))),
                    other => (other.as_str().unwrap(), None),
                };
                Value::String(self.substitute(text, vars.as_ref()))
            }
            "If" => {
                let parts = arg.items();
                let chosen = if self.condition(parts[0].as_str().unwrap()) { &parts[1] } else { &parts[2] };
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
        let definition = self.doc.at("Conditions").as_mapping().unwrap().get(name).unwrap_or_else(|| panic!("no condition {name}"));
        self.truth(definition)
    }

    fn reference(&self, name: &str) -> Value {
        match name {
            "AWS::NoValue" => Value::Null,
            "AWS::Region" => Value::String(REGION.into()),
            "AWS::AccountId" => Value::String(ACCOUNT.into()),
            "AWS::Partition" => Value::String("aws".into()),
            "AWS::URLSuffix" => Value::String("amazonaws.com".into()),
            "AWS::StackName" => Value::String(STACK.into()),
            _ => match self.parameters.get(name) {
                Some(value) => Value::String(value.clone()),
                None => {
                    let resource = self.doc.at("Resources").as_mapping().unwrap().get(name);
                    let resource = resource.unwrap_or_else(|| panic!("Ref {name}: no parameter with a value, and no resource"));
                    // What Ref gives where the code checks its shape: a queue's URL.
                    match resource.text("Type") {
                        "AWS::SQS::Queue" => Value::String(format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/ref-{name}")),
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
                None if name.contains('.') && !name.starts_with("AWS::") => format!("getatt-{}", name.replace('.', "-")),
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
    let name = if key == "Ref" { "Ref" } else { key.strip_prefix("Fn::")? };
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
        self.as_mapping().and_then(|m| m.get(key)).unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    fn text(&self, key: &str) -> &str {
        self.at(key).as_str().unwrap_or_else(|| panic!("{key} is not a string"))
    }

    fn items(&self) -> &Vec<Value> {
        self.as_sequence().unwrap_or_else(|| panic!("not a sequence: {self:?}"))
    }
}
