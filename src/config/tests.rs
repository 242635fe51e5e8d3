use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    // a config directory holding a manifest, so that the default file checks pass
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/manifest.toml"), "").unwrap();
    std::fs::write(dir.path().join("clip.mp4"), b"not really").unwrap();
    let text = format!("[models]\nmanifest = \"models/manifest.toml\"\n{text}");
    let r = Config::parse(&text, &dir.path().join("site.toml"));
    drop(dir);
    r
}

#[test]
fn a_valid_config_parses_with_defaults_and_resolved_paths() {
    let cfg = parse("[[cameras]]\nid = \"a\"\nurl = \"file:clip.mp4\"\n").unwrap();
    assert_eq!(cfg.analysis.fps, 5);
    assert_eq!(cfg.cameras.len(), 1);
    assert!(
        cfg.cameras[0].url.starts_with("file:///"),
        "{}",
        cfg.cameras[0].url
    );
    assert!(cfg.cameras[0].enabled);
    assert!(cfg.server.data_dir.is_absolute());
}

#[test]
fn unknown_key_names_the_key_path_and_line() {
    let e = parse("[analysis]\nfps = 5\nwidht = 640\n").unwrap_err();
    let s = e.to_string();
    assert_eq!(e.line, Some(5), "{s}");
    assert!(s.contains("unknown key `widht`"), "{s}");
    assert!(s.contains("expected one of `fps`, `width`"), "{s}");
    assert!(s.contains("site.toml:5"), "{s}");
}

#[test]
fn unknown_key_inside_a_camera_has_an_indexed_path() {
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"test:ball\"\n[[cameras]]\nid = \"b\"\nurl = \"test:ball\"\npasword_env = \"X\"\n")
        .unwrap_err();
    assert!(e.key.starts_with("cameras[1]"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn wrong_type_says_what_was_expected() {
    let e = parse("[analysis]\nfps = \"five\"\n").unwrap_err();
    let s = e.to_string();
    assert_eq!(e.key, "analysis.fps", "{s}");
    assert_eq!(e.line, Some(4), "{s}");
    assert!(
        s.contains("invalid type") && s.contains("expected u32"),
        "{s}"
    );
}

#[test]
fn missing_required_key_is_named() {
    let e = parse("[[cameras]]\nid = \"a\"\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("missing field `url`"), "{s}");
    assert!(e.key.starts_with("cameras"), "{s}");
}

#[test]
fn missing_video_file_gives_the_path() {
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"file:nope/clip.mp4\"\n").unwrap_err();
    let s = e.to_string();
    assert_eq!(e.key, "cameras[0].url", "{s}");
    assert_eq!(e.line, Some(5), "{s}");
    assert!(
        s.contains("nope/clip.mp4") && s.contains("does not exist"),
        "{s}"
    );
}

#[test]
fn missing_manifest_file_is_reported_on_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = Config::parse(
        "[models]\nmanifest = \"absent.toml\"\n",
        &dir.path().join("c.toml"),
    )
    .unwrap_err();
    assert_eq!(e.key, "models.manifest");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("absent.toml"), "{e}");
}

#[test]
fn unset_credential_variable_is_named() {
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/s\"\npassword_env = \"CROSSCAM_CAM_SURELY_UNSET\"\n")
        .unwrap_err();
    assert_eq!(e.key, "cameras[0].password_env");
    assert!(e.message.contains("CROSSCAM_CAM_SURELY_UNSET"), "{e}");
}

fn env_camera(key: &str, var: &str, ingest: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        "{ingest}\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/s\"\n{key} = \"{var}\"\n"
    ))
}

#[test]
fn credential_variables_outside_the_policy_are_refused_alike_set_or_not() {
    // HOME is set, CROSSCAM_NOPE is not: the same refusal, which says nothing about either
    assert!(std::env::var_os("HOME").is_some());
    let set = env_camera("password_env", "HOME", "").unwrap_err();
    let unset = env_camera("password_env", "CROSSCAM_NOPE", "").unwrap_err();
    assert_eq!(set.key, "cameras[0].password_env");
    assert_eq!(
        set.message.replace("HOME", "V"),
        unset.message.replace("CROSSCAM_NOPE", "V"),
        "{set} / {unset}"
    );
    assert!(set.message.contains("CROSSCAM_CAM_"), "{set}");
    let e = env_camera("username_env", "AWS_SECRET_ACCESS_KEY", "").unwrap_err();
    assert_eq!(e.key, "cameras[0].username_env");
    // listed by the site: allowed (and then it must be set)
    let ok = env_camera(
        "password_env",
        "HOME",
        "[ingest]\ncredential_env_allow = [\"HOME\"]",
    );
    assert!(ok.is_ok(), "{ok:?}");
    // another prefix
    let e = env_camera(
        "password_env",
        "CROSSCAM_CAM_X",
        "[ingest]\ncredential_env_prefix = \"SITE_CAM_\"",
    )
    .unwrap_err();
    assert!(e.message.contains("SITE_CAM_"), "{e}");
    let e = parse("[ingest]\ncredential_env_prefix = \"A\"\n").unwrap_err();
    assert_eq!(e.key, "ingest.credential_env_prefix");
}

#[test]
fn credentials_read_only_what_the_installed_policy_allows() {
    // SAFETY: a variable private to this test
    unsafe { std::env::set_var("CROSSCAM_CAM_CONFIG_TEST_PW", "pw-from-env") };
    let cfg = parse(
        "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/s\"\nusername = \"viewer\"\npassword_env = \"CROSSCAM_CAM_CONFIG_TEST_PW\"\n",
    )
    .unwrap();
    let (user, pass) = cfg.cameras[0].credentials();
    assert_eq!(user.as_deref(), Some("viewer"));
    assert_eq!(pass.as_deref(), Some("pw-from-env"));
    // a camera built around the check (as a hand-made one could be) still reads nothing
    let mut c = cfg.cameras[0].clone();
    c.password_env = Some("HOME".into());
    assert_eq!(c.credentials().1, None);
    assert!(c.check(&secrets::EnvPolicy::default()).is_err());
    c.password_env = None;
    c.credential = Some("gate".into());
    assert!(c.check(&secrets::EnvPolicy::default()).is_ok());
    c.password_env = Some("CROSSCAM_CAM_CONFIG_TEST_PW".into());
    let e = c.check(&secrets::EnvPolicy::default()).unwrap_err();
    assert_eq!(e.0, "credential", "{e:?}");
}

#[test]
fn numbers_ids_and_names_are_range_checked() {
    let cam = |extra: &str| {
        parse(&format!(
            "[[cameras]]\nid = \"a\"\nurl = \"file:clip.mp4\"\n{extra}\n"
        ))
    };
    for bad in [
        "start_s = 1e11",
        "start_s = 1e300",
        "start_s = -1.0",
        "start_s = nan",
        "start_s = inf",
    ] {
        let e = cam(bad).unwrap_err();
        assert_eq!(e.key, "cameras[0].start_s", "{bad}: {e}");
        assert!(e.message.contains("86400"), "{bad}: {e}");
    }
    // a disabled camera is checked all the same
    let e = cam("enabled = false\nstart_s = 1e300").unwrap_err();
    assert_eq!(e.key, "cameras[0].start_s", "{e}");
    assert!(cam("start_s = 86400.0").is_ok());
    let e = cam("fps = 1000").unwrap_err();
    assert_eq!(e.key, "cameras[0].fps");
    let long = "a".repeat(5000);
    let e = parse(&format!(
        "[[cameras]]\nid = \"{long}\"\nurl = \"test:ball\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "cameras[0].id");
    assert!(
        e.to_string().len() < 300,
        "the long id is not repeated in full: {e}"
    );
    for name in [
        "\"a\\u0000b\"",
        "\"\\u001b[31mred\"",
        "\"evil\\u202Egpj.exe\"",
    ] {
        let e = cam(&format!("name = {name}")).unwrap_err();
        assert_eq!(e.key, "cameras[0].name", "{name}: {e}");
    }
    let e = cam(&format!("name = \"{}\"", "n".repeat(63 * 1024))).unwrap_err();
    assert!(e.message.contains("at most 200"), "{e}");
    let e = parse("[api]\nmax_image_pixels = 0\n").unwrap_err();
    assert_eq!(e.key, "api.max_image_pixels");
    let e = parse("[api]\nsearches_per_minute = 0\n").unwrap_err();
    assert_eq!(e.key, "api.searches_per_minute");
    let e = parse("[analysis]\nwidth = 100000\n").unwrap_err();
    assert_eq!(e.key, "analysis.width");
    // the re-embedding thread's nice value (appended to the [models] section)
    for bad in ["reembed_nice = 20", "reembed_nice = -1"] {
        let e = parse(bad).unwrap_err();
        assert_eq!(e.key, "models.reembed_nice", "{bad}: {e}");
        assert!(
            e.message.contains("from 0 (the cameras' priority) to 19"),
            "{bad}: {e}"
        );
    }
    assert_eq!(parse("").unwrap().models.reembed_nice, 10);
    assert_eq!(parse("reembed_nice = 19").unwrap().models.reembed_nice, 19);
    assert_eq!(parse("reembed_nice = 0").unwrap().models.reembed_nice, 0);
}

#[test]
fn detector_input_decoder_threads_and_spinning_are_checked() {
    let c = parse("").unwrap();
    assert_eq!(c.detect.input, DetectInput::Square);
    assert_eq!(
        (c.detect.size, c.ingest.decoder_threads, c.runtime.spin),
        (None, 0, false)
    );
    let c = parse("[detect]\ninput = \"fit\"\nsize = 320\n[ingest]\ndecoder_threads = 1\n[runtime]\nspin = true\n").unwrap();
    assert_eq!(c.detect.input, DetectInput::Fit);
    assert_eq!(
        (c.detect.size, c.ingest.decoder_threads, c.runtime.spin),
        (Some(320), 1, true)
    );
    for bad in ["size = 300", "size = 32", "size = 1312"] {
        let e = parse(&format!("[detect]\n{bad}\n")).unwrap_err();
        assert_eq!(e.key, "detect.size", "{bad}: {e}");
        assert!(
            e.message.contains("a multiple of 32 from 64 to 1280"),
            "{bad}: {e}"
        );
    }
    let e = parse("[detect]\ninput = \"stretch\"\n").unwrap_err();
    assert!(e.key.starts_with("detect.input"), "{e}");
    assert!(
        e.to_string().contains("fit") && e.to_string().contains("square"),
        "{e}"
    );
    let e = parse("[ingest]\ndecoder_threads = 65\n").unwrap_err();
    assert_eq!(e.key, "ingest.decoder_threads", "{e}");
    assert!(e.message.contains("from 0 (libav's choice) to 64"), "{e}");
}

#[test]
fn bad_url_scheme_and_duplicate_ids_are_rejected() {
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"http://x\"\n").unwrap_err();
    assert!(e.message.contains("rtsp://"), "{e}");
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"test:ball\"\n[[cameras]]\nid = \"a\"\nurl = \"test:snow\"\n").unwrap_err();
    assert_eq!(e.key, "cameras[1].id");
    assert!(e.message.contains("used twice"), "{e}");
}

#[test]
fn out_of_range_rate_is_rejected() {
    let e = parse("[analysis]\nfps = 0\n").unwrap_err();
    assert_eq!(e.key, "analysis.fps");
    assert!(e.message.contains("1 to 60"), "{e}");
}

#[test]
fn toml_syntax_errors_carry_the_line() {
    let e = parse("[analysis\nfps = 5\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn bundled_configs_are_valid() {
    let root = crate::paths::project_root();
    let demo = Config::load(&root.join("config/demo.toml"));
    // the demo's clips come from `make setup`; without them the error must name the missing clip
    match demo {
        Ok(cfg) => assert_eq!(cfg.cameras.len(), 2),
        Err(e) => assert!(e.message.contains(".deps/media"), "{e}"),
    }
    // the site example references RTSP cameras with credentials from the environment
    let text = std::fs::read_to_string(root.join("config/site.example.toml")).unwrap();
    let text = text.replace(
        "/opt/crosscam/models/manifest.toml",
        &root.join("models/manifest.toml").display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: test-only environment for the example's credential variables; no other test reads them
    unsafe {
        for v in [
            "CROSSCAM_CAM_GATE_NORTH_USER",
            "CROSSCAM_CAM_GATE_NORTH_PASSWORD",
        ] {
            std::env::set_var(v, "x");
        }
    }
    let e = Config::parse(&text, &dir.path().join("site.toml")).unwrap_err();
    // the only thing missing on a developer machine is the archived recording
    assert_eq!(e.key, "cameras[2].url", "{e}");
}

#[test]
fn gallery_and_linking_sections_parse_with_defaults_and_pairs() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.gallery, GallerySettings::default());
    assert_eq!(cfg.linking, LinkingSettings::default());
    let cfg = parse(
        "[gallery]\nindex = \"hnsw\"\nprototypes_per_identity = 4\n\
         [linking]\nthreshold = 0.55\n\
         [[linking.pairs]]\ncameras = [\"a\", \"b\"]\nthreshold = 0.5\nmin_transit_s = 5\nmax_transit_s = 90.5\n\
         [[linking.pairs]]\ncameras = [\"a\", \"c\"]\noverlapping = true\n\
         [[cameras]]\nid = \"a\"\nurl = \"test:ball\"\n[[cameras]]\nid = \"b\"\nurl = \"test:ball\"\n\
         [[cameras]]\nid = \"c\"\nurl = \"test:ball\"\n",
    )
    .unwrap();
    assert_eq!(cfg.gallery.index, IndexChoice::Hnsw);
    assert_eq!(cfg.linking.pairs.len(), 2);
    assert_eq!(cfg.linking.pairs[0].max_transit_s, Some(90.5));
    assert!(cfg.linking.pairs[1].overlapping);
}

#[test]
fn linking_mistakes_name_the_key() {
    let cams = "[[cameras]]\nid = \"a\"\nurl = \"test:ball\"\n[[cameras]]\nid = \"b\"\nurl = \"test:ball\"\n";
    let cases = [
        (
            "[linking]\nthreshold = 1.5\n",
            "linking.threshold",
            "-1 to 1",
        ),
        ("[linking]\nmargin = -0.1\n", "linking.margin", "0 to 2"),
        ("[gallery]\nhnsw_m = 300\n", "gallery.hnsw_m", "2 to 128"),
        (
            "[gallery]\nhnsw_ef_search = 8\n",
            "gallery.hnsw_ef_search",
            "candidates",
        ),
        (
            "[gallery]\nrebuild_tombstone_ratio = 1.0\n",
            "gallery.rebuild_tombstone_ratio",
            "between 0 and 1",
        ),
        (
            "[gallery]\nprototypes_per_identity = 0\n",
            "gallery.prototypes_per_identity",
            "1 to 256",
        ),
        (
            "[gallery]\nretention_hours = -1\n",
            "gallery.retention_hours",
            "0 = keep forever",
        ),
        (
            "[[linking.pairs]]\ncameras = [\"a\", \"lobbby\"]\n",
            "linking.pairs[0].cameras",
            "\"lobbby\" is not configured",
        ),
        (
            "[[linking.pairs]]\ncameras = [\"a\", \"b\"]\nmin_transit_s = 60\nmax_transit_s = 10\n",
            "linking.pairs[0].max_transit_s",
            "at least min_transit_s",
        ),
        (
            "[[linking.pairs]]\ncameras = [\"a\", \"b\"]\n[[linking.pairs]]\ncameras = [\"b\", \"a\"]\n",
            "linking.pairs[1].cameras",
            "listed twice",
        ),
        (
            "[[linking.pairs]]\ncameras = [\"a\", \"b\"]\noverlapping = true\nmin_transit_s = 3\n",
            "linking.pairs[0].overlapping",
            "no transit time",
        ),
        (
            "[[linking.pairs]]\ncameras = [\"a\", \"b\"]\nthreshhold = 0.5\n",
            "linking.pairs[0]",
            "unknown key `threshhold`",
        ),
    ];
    for (text, key, message) in cases {
        let e = parse(&format!("{text}{cams}")).unwrap_err();
        assert!(e.key.starts_with(key), "{text}: {e}");
        assert!(e.message.contains(message), "{text}: {e}");
        assert!(e.line.is_some(), "{text}: {e}");
    }
}

#[test]
fn linking_values_come_from_the_embedder_unless_the_config_sets_them() {
    let cal = crate::models::LinkCalibration {
        threshold: 0.9,
        margin: 0.02,
        merge_similarity: 0.95,
        measured: "test".into(),
    };
    let mut none = parse("").unwrap().linking;
    assert_eq!(none.origin, LinkingOrigin::Default);
    none.calibrate(Some(&cal));
    assert_eq!(
        (none.threshold, none.margin, none.merge_similarity),
        (0.9, 0.02, 0.95)
    );
    assert_eq!(none.origin, LinkingOrigin::Manifest);

    let mut set = parse("[linking]\nthreshold = 0.7\nmerge_evidence = 5\n")
        .unwrap()
        .linking;
    assert_eq!(set.origin, LinkingOrigin::Config);
    set.calibrate(Some(&cal));
    assert_eq!((set.threshold, set.margin), (0.7, 0.02));
    assert_eq!(set.merge_evidence, 5);
    assert_eq!(set.origin, LinkingOrigin::Config);

    // without a calibration the built-in defaults stay
    let mut plain = parse("").unwrap().linking;
    plain.calibrate(None);
    assert_eq!(plain.threshold, LinkingSettings::default().threshold);

    // the raw table still rejects unknown keys and bad values with the key path
    let e = parse("[linking]\nthreshhold = 0.7\n").unwrap_err();
    assert!(e.to_string().contains("threshhold"), "{e}");
    let e = parse("[linking]\nthreshold = 1.5\n").unwrap_err();
    assert_eq!(e.key, "linking.threshold", "{e}");
}

#[test]
fn start_s_is_for_files_and_not_negative() {
    let ok = parse("[[cameras]]\nid = \"a\"\nurl = \"file:clip.mp4\"\nstart_s = 30\n").unwrap();
    assert_eq!(ok.cameras[0].start_s, Some(30.0));
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"test:ball\"\nstart_s = 3\n").unwrap_err();
    assert_eq!(e.key, "cameras[0].start_s", "{e}");
    assert!(e.to_string().contains("file cameras only"), "{e}");
    let e = parse("[[cameras]]\nid = \"a\"\nurl = \"file:clip.mp4\"\nstart_s = -1\n").unwrap_err();
    assert_eq!(e.key, "cameras[0].start_s", "{e}");
}

#[test]
fn retune_schedule_mistakes_name_the_key() {
    let c = parse("[retune]\nschedule = \"daily 02:30\"\nmin_new_crops = 500\n").unwrap();
    let (s, req) = c.retune.scheduled().unwrap();
    assert_eq!(s.to_string(), "daily 02:30");
    assert_eq!((req.scenario.as_str(), req.budget.as_str()), ("S4", "30m"));
    let e = parse("[retune]\nschedule = \"nightly\"\n").unwrap_err();
    assert_eq!(e.key, "retune.schedule");
    assert!(e.message.contains("daily HH:MM"), "{e}");
    let e = parse("[retune]\nscenario = \"S9\"\n").unwrap_err();
    assert_eq!(e.key, "retune.scenario");
    let e = parse("[retune]\nbudget = \"forever\"\n").unwrap_err();
    assert_eq!(e.key, "retune.budget");
    let e = parse("[retune]\nlabel_far = 1.5\n").unwrap_err();
    assert_eq!(e.key, "retune.label_far");
}
