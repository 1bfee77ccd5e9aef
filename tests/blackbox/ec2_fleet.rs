//! The EC2 fleet against moto: launch templates, pool checks, launches with
//! tags and user data, idempotent launches, listing and terminating.
//! (Capacity, limit and throttling paths, which moto cannot produce, are
//! unit tests of the launch loop in `shared/src/fleet/ec2/launch.rs`.)

use pacer_shared::config::Secret;
use pacer_shared::domain::{Pool, PoolSpec};
use pacer_shared::fleet::ec2::sdk::types::{
    Filter, LaunchTemplateHttpTokensState, ShutdownBehavior, VolumeType,
};
use pacer_shared::fleet::ec2::{Ec2Fleet, sdk};
use pacer_shared::fleet::{
    Fleet, FleetError, JobRef, LaunchRequest, RunnerCallback, TAG_DEPLOYMENT, TAG_POOL, TAG_RUNNER,
    user_data,
};
use serde_json::{Value, json};

use crate::moto::Moto;
use pacer_test_support::moto::Ec2Network;

/// A moto with a VPC (two subnets in two zones, a security group), a
/// second VPC's security group, and an x86_64 AMI from moto's catalogue.
pub(crate) struct Aws {
    pub(crate) moto: Moto,
    pub(crate) ec2: sdk::Client,
    pub(crate) subnets: [String; 2],
    zones: [String; 2],
    pub(crate) sg: String,
    foreign_sg: String,
    pub(crate) ami: String,
}

impl Aws {
    pub(crate) async fn start() -> Aws {
        let moto = Moto::start().await;
        let ec2 = sdk::Client::new(&moto.sdk_config().await);
        let network = Ec2Network::create(&ec2).await;
        let other_vpc = ec2
            .create_vpc()
            .cidr_block("10.1.0.0/16")
            .send()
            .await
            .unwrap()
            .vpc
            .unwrap()
            .vpc_id
            .unwrap();
        let foreign_sg = ec2
            .create_security_group()
            .group_name("elsewhere")
            .description("another VPC's group")
            .vpc_id(&other_vpc)
            .send()
            .await
            .unwrap()
            .group_id
            .unwrap();
        Aws {
            moto,
            ec2,
            subnets: network.subnets,
            zones: network.zones,
            sg: network.sg,
            foreign_sg,
            ami: network.ami,
        }
    }

    fn fleet(&self, deployment: &str) -> Ec2Fleet {
        Ec2Fleet::new(self.ec2.clone(), deployment.to_string())
    }

    /// A valid pool spec, with `changes` laid over it.
    fn pool(&self, id: &str, changes: Value) -> Pool {
        let mut body = json!({
            "project_id": "prj_1", "name": "linux-x64", "labels": ["linux"],
            "instance_types": ["t3.micro", "t3.small"], "subnets": self.subnets,
            "security_groups": [self.sg], "ami": self.ami, "instance_profile": "pacer-runner",
            "root_volume_gb": 30,
        });
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        let spec = PoolSpec::parse(body.as_object().unwrap().clone()).expect("a well-formed pool");
        Pool {
            id: id.into(),
            spec,
            active_runners: 0,
            degraded: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    async fn template_data(&self, name: &str) -> sdk::types::ResponseLaunchTemplateData {
        let versions = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_name(name)
            .versions("$Default")
            .send()
            .await
            .unwrap();
        versions.launch_template_versions()[0]
            .launch_template_data()
            .unwrap()
            .clone()
    }

    async fn instance(&self, id: &str) -> sdk::types::Instance {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap();
        out.reservations()[0].instances()[0].clone()
    }

    async fn instances_tagged(&self, key: &str, value: &str) -> Vec<sdk::types::Instance> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect()
    }
}

pub(crate) fn launch_request(pool: &Pool, runner_id: &str) -> LaunchRequest {
    LaunchRequest {
        pool: pool.clone(),
        runner_id: runner_id.into(),
        runner_name: format!("pacer-{runner_id}"),
        job: Some(JobRef {
            id: "job_1".into(),
            github_job_id: 4242,
            run_id: 77,
            repo: "acme/app".into(),
            labels: vec!["self-hosted".into(), "linux".into()],
            installation_id: Some(1),
        }),
        callback: RunnerCallback {
            url: "https://pacer.example.com".into(),
            token: Secret::new("callback-token"),
        },
        attempt: 0,
        first_launch: false,
    }
}

fn tags(tags: &[sdk::types::Tag]) -> Vec<(String, String)> {
    let mut out: Vec<_> = tags
        .iter()
        .filter(|t| !t.key().unwrap_or_default().starts_with("aws:"))
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn preparing_a_pool_creates_a_hardened_tagged_launch_template() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({}));

    let template_id = fleet
        .prepare_pool(&pool)
        .await
        .unwrap()
        .expect("EC2 pools have a template");

    let name = fleet.launch_template_name("pool_1");
    assert_eq!(name, "pacer-alpha-pool_1");
    let described = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names(&name)
        .send()
        .await
        .unwrap();
    let template = &described.launch_templates()[0];
    assert_eq!(template.launch_template_id(), Some(template_id.as_str()));
    assert_eq!(
        tags(template.tags()),
        pairs(&[(TAG_DEPLOYMENT, "alpha"), (TAG_POOL, "pool_1")])
    );

    let data = aws.template_data(&name).await;
    assert_eq!(data.image_id(), Some(aws.ami.as_str()));
    let imds = data.metadata_options().expect("metadata options");
    assert_eq!(
        imds.http_tokens(),
        Some(&LaunchTemplateHttpTokensState::Required),
        "IMDSv2 only"
    );
    assert_eq!(imds.http_put_response_hop_limit(), Some(1));
    assert_eq!(
        data.instance_initiated_shutdown_behavior(),
        Some(&ShutdownBehavior::Terminate)
    );
    let root = data.block_device_mappings()[0]
        .ebs()
        .expect("an EBS root volume");
    assert_eq!(
        (
            root.volume_size(),
            root.volume_type(),
            root.encrypted(),
            root.delete_on_termination()
        ),
        (Some(30), Some(&VolumeType::Gp3), Some(true), Some(true))
    );
    assert_eq!(data.security_group_ids(), std::slice::from_ref(&aws.sg));
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some("pacer-runner")
    );
    for spec in data.tag_specifications() {
        assert_eq!(
            tags(spec.tags()),
            pairs(&[(TAG_DEPLOYMENT, "alpha"), (TAG_POOL, "pool_1")])
        );
    }
    let resources: Vec<&str> = data
        .tag_specifications()
        .iter()
        .filter_map(|s| s.resource_type())
        .map(|r| r.as_str())
        .collect();
    assert!(
        resources.contains(&"instance") && resources.contains(&"volume"),
        "{resources:?}"
    );
}

#[tokio::test]
async fn saving_a_pool_again_makes_a_new_default_version_of_the_same_template() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let first = fleet
        .prepare_pool(&aws.pool("pool_1", json!({})))
        .await
        .unwrap();

    let second = fleet
        .prepare_pool(&aws.pool("pool_1", json!({"root_volume_gb": 80})))
        .await
        .unwrap();

    assert_eq!(first, second);
    let data = aws.template_data("pacer-alpha-pool_1").await;
    assert_eq!(
        data.block_device_mappings()[0]
            .ebs()
            .and_then(|e| e.volume_size()),
        Some(80)
    );
}

#[tokio::test]
async fn each_reference_ec2_does_not_know_is_refused_naming_its_field() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let cases = [
        (json!({"subnets": ["subnet-0123456789abcdef0"]}), "subnets"),
        (
            json!({"security_groups": ["sg-0123456789abcdef0"]}),
            "security_groups",
        ),
        (
            json!({"security_groups": [aws.foreign_sg]}),
            "security_groups",
        ),
        (json!({"ami": "ami-0123456789abcdef0"}), "ami"),
        (
            json!({"instance_types": ["t3.micro", "zz9.large"]}),
            "instance_types",
        ),
        (json!({"instance_types": ["m7g.large"]}), "instance_types"),
    ];
    for (changes, field) in cases {
        let pool = aws.pool("pool_bad", changes.clone());
        match fleet.prepare_pool(&pool).await {
            Err(FleetError::InvalidPool(invalid)) => {
                assert_eq!(invalid.field, field, "{changes}: {invalid}")
            }
            other => panic!("{changes}: expected InvalidPool({field}), got {other:?}"),
        }
    }
    let templates = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names("pacer-alpha-pool_bad")
        .send()
        .await;
    assert!(templates.is_err(), "no template is made for a refused pool");
}

#[tokio::test]
async fn an_ssm_parameter_ami_is_kept_for_ec2_to_resolve() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let ami = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

    fleet
        .prepare_pool(&aws.pool("pool_1", json!({"ami": ami})))
        .await
        .unwrap();

    assert_eq!(
        aws.template_data("pacer-alpha-pool_1").await.image_id(),
        Some(ami)
    );
}

#[tokio::test]
async fn a_launch_tags_instance_and_volume_and_carries_the_user_data() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({}));
    let template_id = fleet.prepare_pool(&pool).await.unwrap().unwrap();
    let req = launch_request(&pool, "run_1");

    let launched = fleet.launch(&req).await.unwrap();

    assert_eq!(launched.instance_type, "t3.micro", "the pool's first type");
    assert_eq!(launched.market, "on-demand");
    assert_eq!(
        launched.availability_zone.as_deref(),
        Some(aws.zones[0].as_str()),
        "the first subnet's zone"
    );
    let instance = aws.instance(&launched.instance_id).await;
    assert_eq!(instance.subnet_id(), Some(aws.subnets[0].as_str()));
    // What the bill is split by (pacer:deployment, :project, :pool, :repo)
    // and what finds one instance.
    let expected = pairs(&[
        (TAG_DEPLOYMENT, "alpha"),
        (TAG_POOL, "pool_1"),
        ("pacer:project", "prj_1"),
        ("pacer:repo", "acme/app"),
        ("pacer:job", "job_1"),
        (TAG_RUNNER, "run_1"),
        ("Name", "pacer-run_1"),
    ]);
    assert_eq!(tags(instance.tags()), expected);
    let from_template = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some("aws:ec2launchtemplate:id"));
    assert_eq!(
        from_template.and_then(|t| t.value()),
        Some(template_id.as_str()),
        "launched from the pool's template"
    );

    let volumes = aws
        .ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&launched.instance_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(volumes.volumes()[0].tags()),
        expected,
        "the volume is tagged too"
    );

    let stored = crate::lifecycle_aws::user_data_of(&aws, &launched.instance_id).await;
    assert_eq!(stored, req.user_data());
    let settings = user_data::parse(&req.user_data()).unwrap();
    assert_eq!(
        (settings.url.as_str(), settings.token.expose()),
        ("https://pacer.example.com", "callback-token")
    );
}

#[tokio::test]
async fn a_spot_pool_launches_on_the_spot_market() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({"market": "spot"}));
    fleet.prepare_pool(&pool).await.unwrap();

    let launched = fleet.launch(&launch_request(&pool, "run_1")).await.unwrap();

    assert_eq!(launched.market, "spot");
    let instance = aws.instance(&launched.instance_id).await;
    assert_eq!(
        instance.instance_lifecycle().map(|l| l.as_str()),
        Some("spot")
    );
}

#[tokio::test]
async fn launching_the_same_runner_again_after_a_lost_answer_finds_its_instance() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({}));
    fleet.prepare_pool(&pool).await.unwrap();
    let req = launch_request(&pool, "run_1");
    let first = fleet.launch(&req).await.unwrap();

    // The caller never saw `first` (its answer was lost) and launches again.
    let second = fleet.launch(&req).await.unwrap();

    assert_eq!(second.instance_id, first.instance_id);
    assert_eq!(
        aws.instances_tagged(TAG_RUNNER, "run_1").await.len(),
        1,
        "no second instance"
    );
    let found = fleet.instance_for_runner("run_1").await.unwrap().unwrap();
    assert_eq!(found.instance_id, first.instance_id);
    assert_eq!(found.pool_id.as_deref(), Some("pool_1"));
}

#[tokio::test]
async fn a_deployment_lists_only_its_own_live_instances() {
    let aws = Aws::start().await;
    let (alpha, beta) = (aws.fleet("alpha"), aws.fleet("beta"));
    let pool = aws.pool("pool_1", json!({}));
    alpha.prepare_pool(&pool).await.unwrap();
    beta.prepare_pool(&pool).await.unwrap();
    let a1 = alpha
        .launch(&launch_request(&pool, "run_a1"))
        .await
        .unwrap();
    let a2 = alpha
        .launch(&launch_request(&pool, "run_a2"))
        .await
        .unwrap();
    let b1 = beta.launch(&launch_request(&pool, "run_b1")).await.unwrap();
    // An instance pacer did not launch at all.
    aws.ec2
        .run_instances()
        .image_id(&aws.ami)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();

    let mut listed: Vec<_> = alpha
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.instance_id, i.runner_id))
        .collect();
    listed.sort();
    let mut expected = vec![
        (a1.instance_id.clone(), Some("run_a1".to_string())),
        (a2.instance_id, Some("run_a2".to_string())),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        alpha.instance_for_runner("run_b1").await.unwrap().is_none(),
        "beta's runner is not alpha's"
    );
    assert_eq!(
        beta.list_instances().await.unwrap()[0].instance_id,
        b1.instance_id
    );
}

#[tokio::test]
async fn terminating_is_idempotent_and_a_terminated_instance_is_no_longer_live() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({}));
    fleet.prepare_pool(&pool).await.unwrap();
    let launched = fleet.launch(&launch_request(&pool, "run_1")).await.unwrap();

    fleet.terminate(&launched.instance_id).await.unwrap();
    fleet.terminate(&launched.instance_id).await.unwrap();
    fleet.terminate("i-0123456789abcdef0").await.unwrap();

    let state = fleet
        .instance_for_runner("run_1")
        .await
        .unwrap()
        .unwrap()
        .state;
    assert!(
        ["shutting-down", "terminated"].contains(&state.as_str()),
        "{state}"
    );
}

#[tokio::test]
async fn forgetting_a_pool_deletes_its_template_and_tolerates_it_gone() {
    let aws = Aws::start().await;
    let fleet = aws.fleet("alpha");
    let pool = aws.pool("pool_1", json!({}));
    fleet.prepare_pool(&pool).await.unwrap();

    fleet.forget_pool(&pool).await.unwrap();
    fleet.forget_pool(&pool).await.unwrap();

    let templates = aws
        .ec2
        .describe_launch_templates()
        .launch_template_names("pacer-alpha-pool_1")
        .send()
        .await;
    assert!(templates.is_err(), "the template is gone");
}
