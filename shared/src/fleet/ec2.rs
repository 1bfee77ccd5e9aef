//! The EC2 fleet: runners as EC2 instances (real EC2, or moto through
//! `aws.endpoint_url`).
//!
//! It owns each pool's launch template (`pacer-<deployment>-<pool id>`:
//! AMI, IMDSv2 only, shutdown terminates, encrypted gp3 root volume,
//! security groups, instance profile, tags), the checks that a pool's
//! settings exist in EC2 before it is saved, the launch over the pool's
//! markets, instance types and subnets ([`launch`] holds that loop), and
//! finding, listing and terminating this deployment's instances by tag.
//!
//! What it cannot check: the instance profile (that needs IAM, which this
//! adapter has no client for); a wrong one is refused at the first launch
//! and reported as an invalid `instance_profile`. An AMI given as
//! `resolve:ssm:/path` is kept as-is (EC2 resolves it at every launch, so a
//! new image is picked up) and not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    ArchitectureValues, Filter, InstanceInterruptionBehavior, InstanceLifecycleType,
    InstanceMarketOptionsRequest, InstanceStateName, InstanceType,
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateSpecification, LaunchTemplateTagSpecificationRequest, LocationType, MarketType,
    RequestLaunchTemplateData, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions,
    Tag, TagSpecification, UsageClassType, VolumeType,
};
use tracing::instrument;

use self::launch::{Combination, Failure, MarketKind, RetryPolicy, RunApi, run_plan};
use super::{
    Fleet, FleetError, FleetResult, Instance, LaunchRequest, Launched, TAG_DEPLOYMENT, TAG_JOB,
    TAG_POOL, TAG_PROJECT, TAG_REPO, TAG_RUNNER, user_data,
};
use crate::calls::{CallCounts, Calls, SdkCallCounter, ec2_call};
use crate::domain::{Invalid, Market, Pool, PoolSpec, Time};

pub mod launch;

/// The EC2 SDK this adapter is built against, so callers construct its
/// client (and tests drive moto) with exactly the same version.
pub use aws_sdk_ec2 as sdk;

/// The states in which an instance still exists (and may cost money).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

/// How long one RunInstances attempt may take before its outcome counts as
/// unknown (and the runner's instance is looked up before a retry).
const RUN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Ec2Fleet {
    client: aws_sdk_ec2::Client,
    deployment: String,
    retry: RetryPolicy,
    calls: Arc<CallCounts>,
}

impl Ec2Fleet {
    pub fn new(client: aws_sdk_ec2::Client, deployment: String) -> Self {
        // Every request this fleet sends is counted on its way out.
        let calls = Arc::<CallCounts>::default();
        let counter = SdkCallCounter::new(calls.clone(), ec2_call);
        let client = aws_sdk_ec2::Client::from_conf(
            client.config().to_builder().interceptor(counter).build(),
        );
        Self {
            client,
            deployment,
            retry: RetryPolicy::default(),
            calls,
        }
    }

    /// The EC2 requests sent so far (see [`crate::calls`]).
    pub fn calls(&self) -> Calls {
        self.calls.snapshot()
    }

    /// Replaces the launch loop's retry budget (tests shorten it).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The launch template's name for a pool: unique per deployment, and
    /// stable, so saving the pool again adds a version to the same template.
    pub fn launch_template_name(&self, pool_id: &str) -> String {
        let raw = format!("pacer-{}-{}", self.deployment, pool_id);
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "().-/_".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(128)
            .collect()
    }

    fn tag(key: &str, value: &str) -> Tag {
        Tag::builder().key(key).value(value).build()
    }

    fn deployment_filter(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{TAG_DEPLOYMENT}"))
            .values(&self.deployment)
            .build()
    }

    // ------------------------------------------------------------------ checks

    /// Checks every EC2 reference in a pool; returns the root device name of
    /// its AMI (where the root volume's size is set).
    async fn check_pool(&self, spec: &PoolSpec) -> FleetResult<String> {
        let azs = self.check_network(spec).await?;
        let (architecture, root_device) = self.check_ami(&spec.ami).await?;
        self.check_instance_types(spec, architecture.as_ref(), &azs)
            .await?;
        Ok(root_device)
    }

    /// Subnets exist; security groups exist and sit in the subnets' VPC.
    /// Returns the subnets' availability zones.
    async fn check_network(&self, spec: &PoolSpec) -> FleetResult<BTreeSet<String>> {
        let subnets = self
            .client
            .describe_subnets()
            .set_subnet_ids(Some(spec.subnets.clone()))
            .send()
            .await
            .map_err(|e| invalid_if(e, "InvalidSubnet", "subnets", "DescribeSubnets"))?;
        let found: BTreeMap<&str, _> = subnets
            .subnets()
            .iter()
            .filter_map(|s| Some((s.subnet_id()?, s)))
            .collect();
        if let Some(missing) = spec
            .subnets
            .iter()
            .find(|s| !found.contains_key(s.as_str()))
        {
            return Err(invalid(
                "subnets",
                format!("{missing} does not exist in this account and region"),
            ));
        }
        let vpcs: BTreeSet<&str> = found.values().filter_map(|s| s.vpc_id()).collect();
        let azs = found
            .values()
            .filter_map(|s| s.availability_zone().map(str::to_string))
            .collect();
        if spec.security_groups.is_empty() {
            return Ok(azs);
        }
        if vpcs.len() > 1 {
            let list = vpcs.iter().copied().collect::<Vec<_>>().join(", ");
            return Err(invalid(
                "subnets",
                format!("span several VPCs ({list}); a pool's security groups belong to one"),
            ));
        }
        let vpc = vpcs.first().copied().unwrap_or_default();

        let groups = self
            .client
            .describe_security_groups()
            .set_group_ids(Some(spec.security_groups.clone()))
            .send()
            .await
            .map_err(|e| {
                invalid_if(
                    e,
                    "InvalidGroup",
                    "security_groups",
                    "DescribeSecurityGroups",
                )
            })?;
        for id in &spec.security_groups {
            match groups
                .security_groups()
                .iter()
                .find(|g| g.group_id() == Some(id.as_str()))
            {
                None => {
                    return Err(invalid(
                        "security_groups",
                        format!("{id} does not exist in this account and region"),
                    ));
                }
                Some(g) if g.vpc_id() != Some(vpc) => {
                    return Err(invalid(
                        "security_groups",
                        format!(
                            "{id} is in {}, but the subnets are in {vpc}",
                            g.vpc_id().unwrap_or("no VPC")
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(azs)
    }

    /// The AMI exists and is available. Returns its architecture and root
    /// device name; an SSM parameter is accepted unchecked.
    async fn check_ami(&self, ami: &str) -> FleetResult<(Option<ArchitectureValues>, String)> {
        if let Some(path) = ami.strip_prefix("resolve:ssm:") {
            return Ok((None, ssm_root_device(path).to_string()));
        }
        let images = self
            .client
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .map_err(|e| invalid_if(e, "InvalidAMIID", "ami", "DescribeImages"))?;
        let Some(image) = images.images().iter().find(|i| i.image_id() == Some(ami)) else {
            return Err(invalid(
                "ami",
                format!("{ami} does not exist or is not shared with this account"),
            ));
        };
        if let Some(state) = image.state() {
            if state.as_str() != "available" {
                return Err(invalid(
                    "ami",
                    format!("{ami} is {}, not available", state.as_str()),
                ));
            }
        }
        let root = image.root_device_name().unwrap_or("/dev/xvda").to_string();
        Ok((image.architecture().cloned(), root))
    }

    /// Each instance type exists, runs the AMI's architecture, offers the
    /// pool's market, and is offered in at least one of the subnets' zones.
    async fn check_instance_types(
        &self,
        spec: &PoolSpec,
        architecture: Option<&ArchitectureValues>,
        azs: &BTreeSet<String>,
    ) -> FleetResult<()> {
        let types: Vec<InstanceType> = spec
            .instance_types
            .iter()
            .map(|t| InstanceType::from(t.as_str()))
            .collect();
        let described = self
            .client
            .describe_instance_types()
            .set_instance_types(Some(types.clone()))
            .send()
            .await
            .map_err(|e| {
                invalid_if(
                    e,
                    "InvalidInstanceType",
                    "instance_types",
                    "DescribeInstanceTypes",
                )
            })?;
        for name in &spec.instance_types {
            let Some(info) = described
                .instance_types()
                .iter()
                .find(|i| i.instance_type().map(|t| t.as_str()) == Some(name.as_str()))
            else {
                return Err(invalid(
                    "instance_types",
                    format!("{name} is not an instance type in this region"),
                ));
            };
            let archs: Vec<&str> = info
                .processor_info()
                .map(|p| {
                    p.supported_architectures()
                        .iter()
                        .map(|a| a.as_str())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(arch) = architecture {
                if !archs.is_empty() && !archs.contains(&arch.as_str()) {
                    return Err(invalid(
                        "instance_types",
                        format!(
                            "{name} runs {}, but the AMI {} is {}",
                            archs.join("/"),
                            spec.ami,
                            arch.as_str()
                        ),
                    ));
                }
            }
            let classes = info.supported_usage_classes();
            if matches!(spec.market, Market::Spot)
                && !classes.is_empty()
                && !classes.contains(&UsageClassType::Spot)
            {
                return Err(invalid(
                    "instance_types",
                    format!("{name} is not offered on the spot market"),
                ));
            }
        }

        let offerings = self
            .client
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .filters(
                Filter::builder()
                    .name("instance-type")
                    .set_values(Some(spec.instance_types.clone()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("location")
                    .set_values(Some(azs.iter().cloned().collect()))
                    .build(),
            )
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| aws_error("DescribeInstanceTypeOfferings", e))?;
        let offered: BTreeSet<&str> = offerings
            .iter()
            .flat_map(|page| page.instance_type_offerings())
            .filter_map(|o| o.instance_type().map(|t| t.as_str()))
            .collect();
        if let Some(name) = spec
            .instance_types
            .iter()
            .find(|t| !offered.contains(t.as_str()))
        {
            let zones = azs.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(invalid(
                "instance_types",
                format!("{name} is not offered in the subnets' zones ({zones})"),
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------------ launch template

    fn template_data(&self, pool: &Pool, root_device: &str) -> RequestLaunchTemplateData {
        let spec = &pool.spec;
        let tags = |resource: ResourceType| {
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(resource)
                .tags(Self::tag(TAG_DEPLOYMENT, &self.deployment))
                .tags(Self::tag(TAG_POOL, &pool.id))
                .build()
        };
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&spec.ami)
            .metadata_options(
                // IMDSv2 only, and one hop: a container on the runner cannot
                // reach the instance's credentials through the metadata service.
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            // The bootstrap script powers off when done: that must end the
            // instance's billing, not leave a stopped instance.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(root_device)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(i32::try_from(spec.root_volume_gb).unwrap_or(i32::MAX))
                            .volume_type(VolumeType::Gp3)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(tags(ResourceType::Instance))
            .tag_specifications(tags(ResourceType::Volume));
        if !spec.security_groups.is_empty() {
            data = data.set_security_group_ids(Some(spec.security_groups.clone()));
        }
        if let Some(profile) = &spec.instance_profile {
            let p = LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
            let p = if profile.starts_with("arn:") {
                p.arn(profile)
            } else {
                p.name(profile)
            };
            data = data.iam_instance_profile(p.build());
        }
        data.build()
    }

    /// Creates the pool's template, or adds a version to it and makes that
    /// the default. Returns the template id.
    async fn put_launch_template(&self, pool: &Pool, root_device: &str) -> FleetResult<String> {
        let name = self.launch_template_name(&pool.id);
        let data = self.template_data(pool, root_device);
        let created = self
            .client
            .create_launch_template()
            .launch_template_name(&name)
            .version_description(format!("pacer pool {}", pool.spec.name))
            .launch_template_data(data.clone())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Self::tag(TAG_DEPLOYMENT, &self.deployment))
                    .tags(Self::tag(TAG_POOL, &pool.id))
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(out) => {
                let id = out
                    .launch_template()
                    .and_then(|t| t.launch_template_id())
                    .unwrap_or_default();
                tracing::info!(template = %name, template_id = %id, "created the pool's launch template");
                return Ok(id.to_string());
            }
            Err(e) if e.code() == Some("InvalidLaunchTemplateName.AlreadyExistsException") => {}
            Err(e) => return Err(aws_error("CreateLaunchTemplate", e).into()),
        }

        let version = self
            .client
            .create_launch_template_version()
            .launch_template_name(&name)
            .version_description(format!("pacer pool {}", pool.spec.name))
            .launch_template_data(data)
            .send()
            .await
            .map_err(|e| aws_error("CreateLaunchTemplateVersion", e))?;
        let version = version
            .launch_template_version()
            .context_missing("CreateLaunchTemplateVersion")?;
        let number = version
            .version_number()
            .context_missing("CreateLaunchTemplateVersion version number")?;
        self.client
            .modify_launch_template()
            .launch_template_name(&name)
            .default_version(number.to_string())
            .send()
            .await
            .map_err(|e| aws_error("ModifyLaunchTemplate", e))?;
        let id = version.launch_template_id().unwrap_or_default().to_string();
        tracing::info!(template = %name, template_id = %id, version = number, "updated the pool's launch template");
        Ok(id)
    }

    // ------------------------------------------------------------------ instances

    /// This deployment's instances tagged with the runner id, in any state.
    async fn runner_instances(
        &self,
        runner_id: &str,
    ) -> FleetResult<Vec<aws_sdk_ec2::types::Instance>> {
        let tagged = Filter::builder()
            .name(format!("tag:{TAG_RUNNER}"))
            .values(runner_id)
            .build();
        self.instances_where(tagged, None).await
    }

    /// This deployment's instances that pass `filter`, every page of them
    /// (`page_size` per DescribeInstances call, EC2's default when `None`).
    async fn instances_where(
        &self,
        filter: Filter,
        page_size: Option<i32>,
    ) -> FleetResult<Vec<aws_sdk_ec2::types::Instance>> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(self.deployment_filter())
            .filters(filter)
            .into_paginator();
        if let Some(size) = page_size {
            pages = pages.page_size(size);
        }
        let pages = pages
            .send()
            .try_collect()
            .await
            .map_err(|e| aws_error("DescribeInstances", e))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    #[instrument(skip(self, pool), fields(pool = %pool.id))]
    async fn prepare_pool(&self, pool: &Pool) -> FleetResult<Option<String>> {
        let root_device = self.check_pool(&pool.spec).await?;
        self.put_launch_template(pool, &root_device).await.map(Some)
    }

    #[instrument(skip(self, pool), fields(pool = %pool.id))]
    async fn forget_pool(&self, pool: &Pool) -> FleetResult<()> {
        let name = self.launch_template_name(&pool.id);
        // Looked up first: deleting a missing template by name is an error
        // whose code differs between EC2 and moto.
        let found = match self
            .client
            .describe_launch_templates()
            .launch_template_names(&name)
            .send()
            .await
        {
            Ok(out) => out
                .launch_templates()
                .iter()
                .find_map(|t| t.launch_template_id().map(str::to_string)),
            Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => None,
            Err(e) => return Err(aws_error("DescribeLaunchTemplates", e).into()),
        };
        let Some(id) = found else { return Ok(()) };
        match self
            .client
            .delete_launch_template()
            .launch_template_id(&id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(template = %name, template_id = %id, "deleted the pool's launch template");
                Ok(())
            }
            Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => Ok(()),
            Err(e) => Err(aws_error("DeleteLaunchTemplate", e).into()),
        }
    }

    #[instrument(skip(self, req), fields(runner_id = %req.runner_id, pool = %req.pool.id, attempt = req.attempt))]
    async fn launch(&self, req: &LaunchRequest) -> FleetResult<Launched> {
        let api = SdkRun {
            fleet: self,
            req,
            template: self.launch_template_name(&req.pool.id),
        };
        // A launch whose answer was lost earlier is found, not repeated: a
        // runner is one instance. (The idempotency token would do it within
        // EC2's window; moto ignores tokens.) A runner never launched has
        // nothing to find.
        if !req.first_launch {
            if let Some(existing) = api.find().await.map_err(failure_error)? {
                tracing::info!(instance_id = %existing.instance_id, "the runner's instance exists already");
                return Ok(existing);
            }
        }
        let plan = launch::combinations(&req.pool.spec);
        let launched = run_plan(&api, &req.runner_id, req.attempt, &plan, &self.retry).await?;
        tracing::info!(
            instance_id = %launched.instance_id, instance_type = %launched.instance_type,
            market = %launched.market, "launched"
        );
        Ok(launched)
    }

    async fn instance_for_runner(&self, runner_id: &str) -> FleetResult<Option<Instance>> {
        let mut found = self.runner_instances(runner_id).await?;
        // The live one if there is one, else the most recent.
        found.sort_by_key(|i| (is_live(i), i.launch_time().map(|t| t.as_nanos())));
        Ok(found.last().map(to_instance))
    }

    async fn list_instances(&self) -> FleetResult<Vec<Instance>> {
        let live = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
            .build();
        let found = self.instances_where(live, Some(1000)).await?;
        Ok(found.iter().map(to_instance).collect())
    }

    #[instrument(skip(self))]
    async fn terminate(&self, instance_id: &str) -> FleetResult<()> {
        match self
            .client
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(aws_error("TerminateInstances", e).into()),
        }
    }
}

/// [`RunApi`] over the SDK, for one launch request.
struct SdkRun<'a> {
    fleet: &'a Ec2Fleet,
    req: &'a LaunchRequest,
    template: String,
}

impl SdkRun<'_> {
    fn tags(&self, resource: ResourceType) -> TagSpecification {
        let req = self.req;
        let mut spec = TagSpecification::builder()
            .resource_type(resource)
            .tags(Ec2Fleet::tag(TAG_DEPLOYMENT, &self.fleet.deployment))
            .tags(Ec2Fleet::tag(TAG_POOL, &req.pool.id))
            .tags(Ec2Fleet::tag(TAG_PROJECT, &req.pool.spec.project_id))
            .tags(Ec2Fleet::tag(TAG_RUNNER, &req.runner_id))
            .tags(Ec2Fleet::tag("Name", &req.runner_name));
        if let Some(job) = &req.job {
            spec = spec
                .tags(Ec2Fleet::tag(TAG_JOB, &job.id))
                .tags(Ec2Fleet::tag(TAG_REPO, &job.repo));
        }
        spec.build()
    }
}

#[async_trait]
impl RunApi for SdkRun<'_> {
    async fn run(&self, combo: &Combination, client_token: &str) -> Result<Launched, Failure> {
        let mut call = self
            .fleet
            .client
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.template)
                    .version("$Default")
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .instance_type(InstanceType::from(combo.instance_type.as_str()))
            .subnet_id(&combo.subnet)
            .user_data(user_data::to_base64(&self.req.user_data()))
            .client_token(client_token)
            .tag_specifications(self.tags(ResourceType::Instance))
            .tag_specifications(self.tags(ResourceType::Volume));
        if combo.market == MarketKind::Spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        // The launch loop owns retries (same token, lookup after a lost
        // answer), so the SDK's own are off for this call, and a hung call
        // becomes a lost answer instead of hanging the orchestrator.
        let out = call
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
                    .timeout_config(
                        aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(RUN_ATTEMPT_TIMEOUT)
                            .build(),
                    ),
            )
            .send()
            .await
            .map_err(sdk_failure)?;
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| Failure::Unknown("RunInstances answered without an instance".into()))?;
        let mut launched = to_launched(instance);
        launched.market = combo.market.as_str().to_string();
        if launched.instance_type.is_empty() {
            launched.instance_type = combo.instance_type.clone();
        }
        Ok(launched)
    }

    async fn find(&self) -> Result<Option<Launched>, Failure> {
        let out = self
            .fleet
            .client
            .describe_instances()
            .filters(self.fleet.deployment_filter())
            .filters(
                Filter::builder()
                    .name(format!("tag:{TAG_RUNNER}"))
                    .values(&self.req.runner_id)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_failure)?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .map(to_launched))
    }
}

// ---------------------------------------------------------------------- mapping

fn is_live(i: &aws_sdk_ec2::types::Instance) -> bool {
    i.state()
        .and_then(|s| s.name())
        .is_some_and(|n| LIVE_STATES.contains(&n.as_str()))
}

fn tag_value<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or("unknown", InstanceStateName::as_str)
            .to_string(),
        runner_id: tag_value(i, TAG_RUNNER).map(str::to_string),
        pool_id: tag_value(i, TAG_POOL).map(str::to_string),
        launched_at: i
            .launch_time()
            .and_then(|t| Time::from_timestamp(t.secs(), t.subsec_nanos())),
    }
}

fn to_launched(i: &aws_sdk_ec2::types::Instance) -> Launched {
    let spot = i.instance_lifecycle() == Some(&InstanceLifecycleType::Spot);
    Launched {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        market: if spot {
            MarketKind::Spot
        } else {
            MarketKind::OnDemand
        }
        .as_str()
        .to_string(),
    }
}

/// Root device names of the public SSM AMI parameters: Ubuntu's images use
/// `/dev/sda1`, Amazon Linux, Debian and most others `/dev/xvda`. (Only
/// used for `resolve:ssm:` AMIs, whose image pacer does not look up.)
fn ssm_root_device(path: &str) -> &'static str {
    let path = path.to_ascii_lowercase();
    if path.contains("canonical") || path.contains("ubuntu") {
        "/dev/sda1"
    } else {
        "/dev/xvda"
    }
}

fn invalid(field: &str, message: impl Into<String>) -> FleetError {
    FleetError::InvalidPool(Invalid::new(field, message))
}

/// An error naming a pool field when EC2's code starts with `code_prefix`
/// (the thing does not exist or is malformed), else an internal error.
fn invalid_if<E>(
    err: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    code_prefix: &str,
    field: &str,
    op: &str,
) -> FleetError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some(code) if code.starts_with(code_prefix) => invalid(
            field,
            format!("EC2 says: {}", err.message().unwrap_or(code)),
        ),
        _ => aws_error(op, err).into(),
    }
}

fn aws_error<E>(
    op: &str,
    err: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    anyhow::anyhow!("EC2 {op}: {}", DisplayErrorContext(&err))
}

fn sdk_failure<E>(err: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(_) => Failure::Refused {
            code: err.code().unwrap_or("Unknown").to_string(),
            message: err.message().unwrap_or_default().to_string(),
        },
        // Never sent: nothing can have been launched.
        SdkError::ConstructionFailure(_) => Failure::refused(
            "ConstructionFailure",
            &DisplayErrorContext(&err).to_string(),
        ),
        _ => Failure::Unknown(DisplayErrorContext(&err).to_string()),
    }
}

/// The launch's first look-up failed: say so, as throttling where it was.
fn failure_error(f: Failure) -> FleetError {
    match f {
        Failure::Refused { code, message } if code == "RequestLimitExceeded" => {
            FleetError::Throttled(format!("EC2 DescribeInstances: {code}: {message}"))
        }
        Failure::Refused { code, message } => {
            FleetError::Other(anyhow::anyhow!("EC2 DescribeInstances: {code}: {message}"))
        }
        Failure::Unknown(why) => FleetError::Other(anyhow::anyhow!("EC2 DescribeInstances: {why}")),
    }
}

trait ContextMissing<T> {
    fn context_missing(self, what: &str) -> FleetResult<T>;
}

impl<T> ContextMissing<T> for Option<T> {
    fn context_missing(self, what: &str) -> FleetResult<T> {
        self.ok_or_else(|| {
            FleetError::Other(anyhow::anyhow!(
                "EC2 {what}: the answer lacks a field pacer needs"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ubuntu_ssm_parameters_get_ubuntus_root_device() {
        assert_eq!(
            ssm_root_device(
                "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id"
            ),
            "/dev/sda1"
        );
        assert_eq!(
            ssm_root_device("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"),
            "/dev/xvda"
        );
    }
}
