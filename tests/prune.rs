//! The pruning engine end to end, through the library: every exporter style survives a `--ratio 0`
//! round trip bit-for-bit (within 1e-5), coupled residual groups are really pruned and still add
//! up, a MACs target lands where asked on real-size re-id ResNets, and the training engine's
//! interfaces (gradient source, re-tune hook) are honoured. All models are built in Rust and run
//! in ONNX Runtime.

use std::collections::HashMap;

use crosscam::config::RuntimeSettings;
use crosscam::onnx::resnet::{BlockKind, Head, Init, ResNetSpec, Style, Tail, build};
use crosscam::onnx::{Model, shape};
use crosscam::prune::criteria::WeightScorer;
use crosscam::prune::groups::{self, AnalyzeOptions, Role};
use crosscam::prune::{
    self, Criterion, GradientSource, NoRetune, PruneOptions, RetuneHook, Scope, StepInfo,
    StrategyKind, Target, TaylorScorer, WidthPolicy, ir,
};
use crosscam::runtime::{self, SessionOptions};
use ndarray::Array4;

fn run(model: &Model, x: &Array4<f32>) -> (Vec<usize>, Vec<f32>) {
    let rt = runtime::init(&RuntimeSettings::default()).expect("ONNX Runtime (run make setup)");
    let (mut s, _) = rt
        .session_from_bytes(&model.to_bytes(), SessionOptions::default())
        .expect("ONNX Runtime loads the model");
    let input = ort::value::TensorRef::from_array_view(x).unwrap();
    let out = s
        .run(ort::inputs!["input" => input])
        .expect("ONNX Runtime runs the model");
    let (shape, data) = out[0].try_extract_tensor::<f32>().unwrap();
    (shape.iter().map(|&d| d as usize).collect(), data.to_vec())
}

fn input(n: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, h, w), |(b, c, y, x)| {
        (((b * 131 + c * 31 + y * 7 + x * 3) % 23) as f32 / 23.0 - 0.5) * 2.0
    })
}

/// max |a − b| / max |a|
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn l1() -> WeightScorer {
    WeightScorer {
        criterion: Criterion::L1,
    }
}

#[test]
fn ratio_zero_round_trips_every_exporter_style() {
    let heads = [
        Head::Features,
        Head::BnNeck,
        Head::Classifier { classes: 10 },
    ];
    let cases: Vec<(BlockKind, Head, Style)> = vec![
        (BlockKind::Basic, heads[0], Style::default()),
        (
            BlockKind::Basic,
            heads[1],
            Style {
                fuse_bn: true,
                ..Style::default()
            },
        ),
        (
            BlockKind::Basic,
            heads[2],
            Style {
                opset: 11,
                ..Style::default()
            },
        ),
        (
            BlockKind::Basic,
            heads[1],
            Style {
                tail: Tail::ReduceMean,
                opset: 13,
                ..Style::default()
            },
        ),
        (
            BlockKind::Basic,
            heads[0],
            Style {
                tail: Tail::ReduceMeanShapeChain,
                opset: 11,
                fuse_bn: true,
                identity_weights: true,
            },
        ),
        (
            BlockKind::Bottleneck,
            heads[1],
            Style {
                tail: Tail::ReduceMeanShapeChain,
                opset: 18,
                fuse_bn: true,
                identity_weights: true,
            },
        ),
        (
            BlockKind::Bottleneck,
            heads[2],
            Style {
                tail: Tail::ReduceMean,
                opset: 20,
                identity_weights: true,
                fuse_bn: false,
            },
        ),
        (
            BlockKind::Bottleneck,
            heads[0],
            Style {
                tail: Tail::GapFlatten,
                opset: 19,
                fuse_bn: true,
                identity_weights: false,
            },
        ),
        (
            BlockKind::Bottleneck,
            heads[1],
            Style {
                tail: Tail::ReduceMeanShapeChain,
                opset: 20,
                fuse_bn: false,
                identity_weights: true,
            },
        ),
    ];
    let x = input(2, 64, 32);
    for (block, head, style) in cases {
        let spec = match block {
            BlockKind::Basic => ResNetSpec::resnet18(),
            BlockKind::Bottleneck => ResNetSpec::resnet50(),
        }
        .for_reid()
        .scaled(0.25)
        .with_input(64, 32);
        let mut m = build(&spec, head, style, Init::RandomStats, 7);
        m.ir_version = m.ir_version.max(prune::min_ir_version(style.opset));
        let (_, want) = run(&m, &x);
        for strategy in [StrategyKind::OneShot, StrategyKind::Iterative] {
            let mut opts = PruneOptions::new(Target::Ratio(0.0));
            opts.strategy = strategy;
            let p = prune::prune(&m, &opts, &mut l1(), &mut NoRetune)
                .unwrap_or_else(|e| panic!("{block:?} {head:?} {style:?}: {e}"));
            assert_eq!(p.report.macs_after, p.report.macs_before);
            assert_eq!(p.report.params_after, p.report.params_before);
            let written = Model::from_bytes(&p.model.to_bytes()).unwrap();
            let (shape, got) = run(&written, &x);
            assert_eq!(shape[0], 2);
            let d = rel_diff(&want, &got);
            assert!(
                d <= 1e-5,
                "{block:?} {head:?} {style:?} {strategy:?}: relative difference {d}"
            );
        }
    }
}

/// Zeroes every 4th channel (1, 5, 9, …) of every prunable group, in all its producers and norms,
/// so that those channels are exactly zero everywhere: removing them must not change the output.
fn kill_every_fourth_channel(m: &mut Model, a: &groups::Analysis) {
    let roles: HashMap<usize, &Role> = a.roles.iter().map(|(i, r)| (*i, r)).collect();
    for g in a.prunable() {
        let dead: Vec<usize> = (0..g.channels).filter(|c| c % 4 == 1).collect();
        for p in &g.producers {
            let n = m.graph.nodes[p.node].clone();
            let (w, b) = (n.inputs[1].clone(), n.input(2).map(str::to_string));
            let t = m.graph.initializers.get_mut(&w).unwrap();
            let rows = t.dims[0];
            assert!(matches!(
                roles[&p.node],
                Role::Conv { .. } | Role::Depthwise { .. }
            ));
            let per = t.numel() / rows;
            if let crosscam::onnx::TensorData::F32(v) = &mut t.data {
                for &c in &dead {
                    v[c * per..(c + 1) * per].fill(0.0);
                }
            }
            if let Some(b) = b
                && let crosscam::onnx::TensorData::F32(v) =
                    &mut m.graph.initializers.get_mut(&b).unwrap().data
            {
                for &c in &dead {
                    v[c] = 0.0;
                }
            }
        }
        for nm in &g.norms {
            let n = m.graph.nodes[nm.node].clone();
            for i in [1, 2] {
                if let crosscam::onnx::TensorData::F32(v) =
                    &mut m.graph.initializers.get_mut(&n.inputs[i]).unwrap().data
                {
                    for &c in &dead {
                        v[c] = 0.0;
                    }
                }
            }
        }
    }
}

#[test]
fn pruning_dead_channels_of_coupled_groups_keeps_outputs_exact() {
    let x = input(2, 64, 32);
    let basic = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.5)
        .with_input(64, 32);
    let bottleneck = ResNetSpec::resnet50()
        .for_reid()
        .scaled(0.25)
        .with_input(64, 32);
    for (spec, style, criterion, scope) in [
        (&basic, Style::default(), Criterion::L1, Scope::Layer),
        (&basic, Style::default(), Criterion::BnScale, Scope::Global),
        (
            &basic,
            Style {
                fuse_bn: true,
                ..Style::default()
            },
            Criterion::L2,
            Scope::Global,
        ),
        (
            &bottleneck,
            Style {
                fuse_bn: true,
                tail: Tail::ReduceMeanShapeChain,
                opset: 13,
                identity_weights: true,
            },
            Criterion::L1,
            Scope::Layer,
        ),
    ] {
        let mut m = ir::import(&build(spec, Head::BnNeck, style, Init::RandomStats, 3)).unwrap();
        let a = groups::analyze(&m, &AnalyzeOptions::default()).unwrap();
        kill_every_fourth_channel(&mut m, &a);
        let (_, want) = run(&m, &x);
        let mut opts = PruneOptions::new(Target::Ratio(0.25));
        opts.scope = scope;
        opts.widths = WidthPolicy {
            min_channels: 4,
            multiple: 4,
        };
        let p = prune::prune(&m, &opts, &mut WeightScorer { criterion }, &mut NoRetune).unwrap();
        // every prunable group lost exactly its dead quarter, coupled groups included
        let coupled: Vec<_> = p
            .report
            .groups
            .iter()
            .filter(|g| g.coupled && g.fixed.is_none())
            .collect();
        assert!(coupled.len() >= 3, "{:?}", p.report.groups);
        for g in p.report.groups.iter().filter(|g| g.fixed.is_none()) {
            assert_eq!(
                g.kept * 4,
                g.total * 3,
                "{criterion:?} {scope:?}: group {} kept {}/{}",
                g.name,
                g.kept,
                g.total
            );
        }
        let (_, got) = run(&p.model, &x);
        let d = rel_diff(&want, &got);
        assert!(
            d <= 1e-5,
            "{criterion:?} {scope:?}: relative difference {d}"
        );
    }
}

#[test]
fn deep_targets_prune_coupled_groups_and_residual_adds_line_up() {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.5)
        .with_input(64, 32);
    let m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 11);
    for scope in [Scope::Layer, Scope::Global] {
        let mut opts = PruneOptions::new(Target::Macs(0.3));
        opts.scope = scope;
        let p = prune::prune(&m, &opts, &mut l1(), &mut NoRetune).unwrap();
        let r = &p.report;
        assert!(
            (0.25..=0.35).contains(&r.macs_fraction),
            "{scope:?}: {}",
            r.macs_fraction
        );
        let pruned_coupled = r
            .groups
            .iter()
            .filter(|g| g.coupled && g.kept < g.total)
            .count();
        assert!(
            pruned_coupled >= 2,
            "{scope:?}: coupled groups not pruned: {:?}",
            r.groups
        );
        // every Add's operands have the same (pruned) shape
        let s = shape::infer(&p.model, &shape::input_shapes(&p.model, 1, None).unwrap());
        assert!(s.first_gap.is_none(), "{:?}", s.first_gap);
        let mut adds = 0;
        for n in p.model.graph.nodes.iter().filter(|n| n.op == "Add") {
            let (a, b) = (s.get(&n.inputs[0]).unwrap(), s.get(&n.inputs[1]).unwrap());
            assert_eq!(a, b, "{}", n.name);
            adds += 1;
        }
        assert_eq!(adds, 8);
        // the stage-1 group (stem + both blocks) shrinks as one; in layer scope it must shrink
        let stem_w = &p.model.graph.initializers["conv1.weight"];
        let l1c2 = &p.model.graph.initializers["layer1.1.conv2.weight"];
        assert_eq!(stem_w.dims[0], l1c2.dims[0]);
        if scope == Scope::Layer {
            assert!(stem_w.dims[0] < 32, "stage 1 kept {}", stem_w.dims[0]);
        }
        let (shape, _) = run(&p.model, &input(2, 64, 32));
        assert_eq!(shape, vec![2, spec.output_dim()]);
    }
}

#[test]
fn half_macs_on_real_size_reid_resnets() {
    let x = input(1, 256, 128);
    for (name, scope) in [
        ("resnet18", Scope::Layer),
        ("resnet34", Scope::Global),
        ("resnet50", Scope::Layer),
    ] {
        let spec = ResNetSpec::by_name(name).unwrap().for_reid();
        let m = build(
            &spec,
            Head::BnNeck,
            Style {
                fuse_bn: true,
                ..Style::default()
            },
            Init::RandomStats,
            5,
        );
        let mut opts = PruneOptions::new(Target::Macs(0.5));
        opts.scope = scope;
        let p = prune::prune(&m, &opts, &mut l1(), &mut NoRetune).unwrap();
        let r = &p.report;
        assert!(
            (0.45..=0.55).contains(&r.macs_fraction),
            "{name} {scope:?}: MACs {} -> {} ({:.3})",
            r.macs_before,
            r.macs_after,
            r.macs_fraction
        );
        assert_eq!(r.outputs_after, r.outputs_before);
        let (shape, out) = run(&p.model, &x);
        assert_eq!(shape, vec![1, spec.output_dim()], "{name}");
        assert!(out.iter().all(|v| v.is_finite()));
        // kept widths are multiples of 8
        for l in &r.layers {
            assert!(
                l.kept == l.total || l.kept % 8 == 0,
                "{name}: {} keeps {}",
                l.node,
                l.kept
            );
        }
    }
}

/// A stand-in for the training engine: "gradients" that favour high channel indices.
struct FakeGradients {
    calls: usize,
}

impl GradientSource for FakeGradients {
    fn taylor(
        &mut self,
        model: &Model,
        activations: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        self.calls += 1;
        let shapes = shape::infer(model, &shape::input_shapes(model, 1, None)?);
        Ok(activations
            .iter()
            .map(|a| {
                let c = shapes.get(a).unwrap()[1] as usize;
                (a.clone(), (0..c).map(|i| i as f32 + 1.0).collect())
            })
            .collect())
    }
}

struct CountingHook {
    seen: Vec<StepInfo>,
}

impl RetuneHook for CountingHook {
    fn retune(
        &mut self,
        step: &StepInfo,
        model: &mut Model,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // a re-tuner changes weights, not widths: nudge one (of the fixed BNNeck)
        if let Some(crosscam::onnx::TensorData::F32(v)) = model
            .graph
            .initializers
            .get_mut("bottleneck.bias")
            .map(|t| &mut t.data)
        {
            v[0] += 1e-3;
        }
        self.seen.push(*step);
        Ok(())
    }
}

#[test]
fn taylor_source_and_retune_hook_drive_an_iterative_run() {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.5)
        .with_input(64, 32);
    let m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 2);
    let mut opts = PruneOptions::new(Target::Macs(0.5));
    opts.strategy = StrategyKind::Iterative;
    opts.steps = 3;
    let mut scorer = TaylorScorer {
        source: FakeGradients { calls: 0 },
    };
    let mut hook = CountingHook { seen: vec![] };
    let p = prune::prune(&m, &opts, &mut scorer, &mut hook).unwrap();
    assert_eq!(scorer.source.calls, 3);
    assert_eq!(hook.seen.len(), 3);
    let fr: Vec<f64> = hook.seen.iter().map(|s| s.macs_fraction).collect();
    assert!(fr.windows(2).all(|w| w[1] < w[0]), "{fr:?}");
    assert!(
        (0.45..=0.55).contains(&p.report.macs_fraction),
        "{}",
        p.report.macs_fraction
    );
    assert_eq!(p.report.criterion, "taylor");
    assert_eq!(p.report.step_reports.len(), 3);
    // scores grow with the channel index, so every group keeps its last channels: the stem
    // (whose input, the image, is never pruned) keeps its last filters, in order
    let orig = &m.graph.initializers["conv1.weight"];
    let now = &p.model.graph.initializers["conv1.weight"];
    let per = orig.numel() / orig.dims[0];
    let first_kept = orig.dims[0] - now.dims[0];
    assert!(now.dims[0] < orig.dims[0]);
    assert!(now.f32_data().unwrap() == &orig.f32_data().unwrap()[first_kept * per..]);
    let bias = p.model.graph.initializers["bottleneck.bias"]
        .f32_data()
        .unwrap()[0];
    let bias0 = m.graph.initializers["bottleneck.bias"].f32_data().unwrap()[0];
    assert!(
        (bias - bias0 - 3e-3).abs() < 1e-6,
        "the hook's changes are kept"
    );
    run(&p.model, &input(1, 64, 32));
}

/// The tail of a classifier as other exporters write it: a Reshape whose target spells out the
/// channel count (`[-1, C]` from torch.export, `Concat(N, [C])` from `view(n, C)`), and the
/// linear layer as `MatMul` + `Add` with a `[in, out]` weight.
#[test]
fn linear_heads_and_hard_coded_reshape_targets_follow_pruning() {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.25)
        .with_input(64, 32);
    let c = spec.output_dim();
    let style = Style {
        tail: Tail::ReduceMeanShapeChain,
        ..Style::default()
    };
    let base = build(
        &spec,
        Head::Classifier { classes: 10 },
        style,
        Init::RandomStats,
        8,
    );
    let x = input(2, 64, 32);
    let mut variants = Vec::new();
    // (a) view(n, C): the Concat's second piece holds C
    let mut a = base.clone();
    a.graph.initializers.insert(
        "shape.minus1".into(),
        crosscam::onnx::Tensor::i64(vec![1], vec![c as i64]),
    );
    variants.push(("concat", a));
    // (b) a constant target [-1, C], allowzero = 1
    let mut b = base.clone();
    b.graph.initializers.insert(
        "tgt".into(),
        crosscam::onnx::Tensor::i64(vec![2], vec![-1, c as i64]),
    );
    let view = b
        .graph
        .nodes
        .iter_mut()
        .find(|n| n.op == "Reshape")
        .unwrap();
    view.inputs[1] = "tgt".into();
    view.set_attr("allowzero", crosscam::onnx::Attr::Int(1));
    b.graph.remove_dead();
    variants.push(("constant", b));
    // (c) MatMul + Add with a transposed weight
    let mut m = base.clone();
    let fc = m.graph.nodes.iter().position(|n| n.op == "Gemm").unwrap();
    let (w, bias) = (
        m.graph.nodes[fc].inputs[1].clone(),
        m.graph.nodes[fc].inputs[2].clone(),
    );
    let wt = &m.graph.initializers[&w];
    let (o, i) = (wt.dims[0], wt.dims[1]);
    let d = wt.f32_data().unwrap();
    let t: Vec<f32> = (0..i * o).map(|k| d[(k % o) * i + k / o]).collect();
    m.graph
        .initializers
        .insert("fc.wt".into(), crosscam::onnx::Tensor::f32(vec![i, o], t));
    let pooled = m.graph.nodes[fc].inputs[0].clone();
    m.graph.nodes[fc] =
        crosscam::onnx::Node::new("MatMul", "fc.matmul", &[&pooled, "fc.wt"], &["fc.mm"]);
    m.graph.nodes.push(crosscam::onnx::Node::new(
        "Add",
        "fc.add",
        &["fc.mm", &bias],
        &["logits"],
    ));
    m.graph.remove_dead();
    variants.push(("matmul", m));
    let (_, want) = run(&base, &x);
    for (name, model) in variants {
        let (_, same) = run(&model, &x);
        assert!(
            rel_diff(&want, &same) < 1e-5,
            "{name}: the variant computes the same network"
        );
        let p0 = prune::prune(
            &model,
            &PruneOptions::new(Target::Ratio(0.0)),
            &mut l1(),
            &mut NoRetune,
        )
        .unwrap();
        assert!(
            rel_diff(&want, &run(&p0.model, &x).1) <= 1e-5,
            "{name}: ratio 0"
        );
        let p = prune::prune(
            &model,
            &PruneOptions::new(Target::Ratio(0.5)),
            &mut l1(),
            &mut NoRetune,
        )
        .unwrap();
        let last = p
            .report
            .groups
            .iter()
            .find(|g| g.name == "layer4.0.conv2")
            .unwrap();
        assert!(
            last.kept < last.total,
            "{name}: the classifier's input group is pruned"
        );
        let (shape, _) = run(&p.model, &x);
        assert_eq!(shape, vec![2, 10], "{name}");
    }
}

#[test]
fn prune_output_changes_the_embedding_dimension_only_when_asked() {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.5)
        .with_input(64, 32);
    let m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 9);
    let mut opts = PruneOptions::new(Target::Ratio(0.5));
    let kept = prune::prune(&m, &opts, &mut l1(), &mut NoRetune).unwrap();
    assert_eq!(run(&kept.model, &input(1, 64, 32)).0, vec![1, 256]);
    opts.analyze.prune_outputs = true;
    let p = prune::prune(&m, &opts, &mut l1(), &mut NoRetune).unwrap();
    assert_eq!(run(&p.model, &input(1, 64, 32)).0, vec![1, 128]);
    assert_eq!(
        p.report.outputs_after,
        vec![vec!["N".to_string(), "128".to_string()]]
    );
}

/// The bundled MobileNetV2 (legacy exporter: depthwise convs, Clip, inverted residuals).
#[test]
fn bundled_mobilenetv2_prunes_and_runs() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/mobilenetv2-imagenet.onnx"
    );
    let m = Model::load(std::path::Path::new(path)).unwrap();
    let x = input(1, 224, 224);
    let (_, want) = run(&m, &x);
    let p0 = prune::prune(
        &m,
        &PruneOptions::new(Target::Ratio(0.0)),
        &mut l1(),
        &mut NoRetune,
    )
    .unwrap();
    assert!(rel_diff(&want, &run(&p0.model, &x).1) <= 1e-5);
    let mut opts = PruneOptions::new(Target::Macs(0.5));
    opts.scope = Scope::Global;
    let p = prune::prune(
        &m,
        &opts,
        &mut WeightScorer {
            criterion: Criterion::Fpgm,
        },
        &mut NoRetune,
    )
    .unwrap();
    assert!(
        (0.45..=0.55).contains(&p.report.macs_fraction),
        "{}",
        p.report.macs_fraction
    );
    let dw = p
        .model
        .graph
        .nodes
        .iter()
        .filter(|n| n.attr_i("group").unwrap_or(1) > 1)
        .count();
    assert_eq!(dw, 17, "depthwise convs keep group = channels");
    assert_eq!(run(&p.model, &x).0, vec![1, 1280]);
}

/// A VGG-style head: Flatten of a whole feature map into a linear layer, so each channel owns
/// H×W consecutive input features of the Gemm. Dead channels removed → same output.
#[test]
fn flattened_feature_maps_slice_the_linear_layer_per_channel() {
    use crosscam::onnx::{Attr, Dim, Graph, Node, Tensor, ValueInfo};
    let (c, hw, classes) = (16usize, 4 * 4, 5usize);
    let mut g = Graph::default();
    g.inputs.push(ValueInfo {
        name: "input".into(),
        elem_type: 1,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(3),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ]),
    });
    // channels 0, 2, 4, … are dead (zero filter and bias)
    let w: Vec<f32> = (0..c * 27)
        .map(|i| {
            if (i / 27) % 2 == 0 {
                0.0
            } else {
                ((i * 37 % 19) as f32 - 9.0) / 10.0
            }
        })
        .collect();
    let b: Vec<f32> = (0..c)
        .map(|i| if i % 2 == 0 { 0.0 } else { 0.1 * i as f32 })
        .collect();
    let fc: Vec<f32> = (0..classes * c * hw)
        .map(|i| ((i * 13 % 17) as f32 - 8.0) / 20.0)
        .collect();
    g.initializers
        .insert("w".into(), Tensor::f32(vec![c, 3, 3, 3], w));
    g.initializers.insert("b".into(), Tensor::f32(vec![c], b));
    g.initializers
        .insert("fc.w".into(), Tensor::f32(vec![classes, c * hw], fc));
    g.initializers.insert(
        "fc.b".into(),
        Tensor::f32(vec![classes], vec![0.5; classes]),
    );
    g.nodes.push(
        Node::new("Conv", "conv", &["input", "w", "b"], &["a"])
            .with_attr("pads", Attr::Ints(vec![1; 4])),
    );
    g.nodes.push(Node::new("Relu", "relu", &["a"], &["r"]));
    g.nodes
        .push(Node::new("Flatten", "flatten", &["r"], &["f"]).with_attr("axis", Attr::Int(1)));
    g.nodes.push(
        Node::new("Gemm", "fc", &["f", "fc.w", "fc.b"], &["logits"])
            .with_attr("transB", Attr::Int(1)),
    );
    g.outputs.push(ValueInfo {
        name: "logits".into(),
        elem_type: 1,
        shape: Some(vec![Dim::Named("N".into()), Dim::Fixed(classes as i64)]),
    });
    let m = Model {
        ir_version: 8,
        opset: 17,
        other_opsets: vec![],
        producer_name: "test".into(),
        producer_version: String::new(),
        metadata: vec![],
        graph: g,
    };
    let x = input(3, 4, 4);
    let (_, want) = run(&m, &x);
    let p = prune::prune(
        &m,
        &PruneOptions::new(Target::Ratio(0.5)),
        &mut l1(),
        &mut NoRetune,
    )
    .unwrap();
    assert_eq!(
        p.model.graph.initializers["fc.w"].dims,
        vec![classes, c / 2 * hw]
    );
    let (shape, got) = run(&p.model, &x);
    assert_eq!(shape, vec![3, classes]);
    assert!(rel_diff(&want, &got) <= 1e-5, "{}", rel_diff(&want, &got));
}

/// PyTorch's exporter writes one initializer for equal-valued tensors, so the convolutions of an
/// untrained (or re-initialised) network with BatchNorm fused share one zero bias, and layers tied
/// on purpose share one weight. Here three convs share a bias and the last two a weight; pruning
/// slices them differently for each reader (conv1 and conv2 lose output channels, conv3 feeds the
/// embedding and keeps all of its outputs but loses input channels). Each reader must get its own
/// slice: the pruned model runs and keeps its output dimension.
#[test]
fn shared_bias_and_weight_initializers_are_copied_on_write() {
    use crosscam::onnx::{Attr, Dim, Graph, Node, Tensor, ValueInfo};
    let c = 16usize;
    let vals = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 211) as f32 / 211.0 - 0.5) * 0.4)
            .collect()
    };
    let mut g = Graph::default();
    g.inputs.push(ValueInfo {
        name: "input".into(),
        elem_type: 1,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(3),
            Dim::Fixed(16),
            Dim::Fixed(16),
        ]),
    });
    g.initializers
        .insert("w1".into(), Tensor::f32(vec![c, 3, 3, 3], vals(c * 27, 1)));
    g.initializers.insert(
        "w.shared".into(),
        Tensor::f32(vec![c, c, 3, 3], vals(c * c * 9, 2)),
    );
    // the zero bias of freshly fused BatchNorms, written once for all three convs
    g.initializers
        .insert("b.shared".into(), Tensor::f32(vec![c], vec![0.0; c]));
    let conv = |name: &str, x: &str, w: &str, y: &str| {
        Node::new("Conv", name, &[x, w, "b.shared"], &[y])
            .with_attr("kernel_shape", Attr::Ints(vec![3, 3]))
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1]))
    };
    g.nodes = vec![
        conv("conv1", "input", "w1", "c1"),
        Node::new("Relu", "relu1", &["c1"], &["r1"]),
        conv("conv2", "r1", "w.shared", "c2"),
        Node::new("Relu", "relu2", &["c2"], &["r2"]),
        conv("conv3", "r2", "w.shared", "c3"),
        Node::new("Relu", "relu3", &["c3"], &["r3"]),
        Node::new("GlobalAveragePool", "gap", &["r3"], &["gap"]),
        Node::new("Flatten", "flatten", &["gap"], &["features"]).with_attr("axis", Attr::Int(1)),
    ];
    g.outputs.push(ValueInfo {
        name: "features".into(),
        elem_type: 1,
        shape: Some(vec![Dim::Named("N".into()), Dim::Fixed(c as i64)]),
    });
    let m = Model {
        ir_version: 8,
        opset: 17,
        other_opsets: vec![],
        producer_name: "test".into(),
        producer_version: String::new(),
        metadata: vec![],
        graph: g,
    };
    let x = input(2, 16, 16);
    assert_eq!(run(&m, &x).0, vec![2, c]);

    let mut opts = PruneOptions::new(Target::Ratio(0.5));
    opts.widths = WidthPolicy {
        min_channels: 1,
        multiple: 1,
    };
    let p = prune::prune(&m, &opts, &mut l1(), &mut NoRetune).unwrap();
    let pg = &p.model.graph;
    let node = |name: &str| pg.nodes.iter().find(|n| n.name == name).unwrap();
    let dims = |n: &Node, i: usize| pg.initializers[&n.inputs[i]].dims.clone();
    let (c1, c2, c3) = (node("conv1"), node("conv2"), node("conv3"));
    assert_eq!(dims(c1, 1), vec![c / 2, 3, 3, 3]);
    assert_eq!(dims(c1, 2), vec![c / 2]);
    assert_eq!(dims(c2, 1), vec![c / 2, c / 2, 3, 3]);
    assert_eq!(dims(c2, 2), vec![c / 2]);
    assert_eq!(dims(c3, 1), vec![c, c / 2, 3, 3]);
    assert_eq!(dims(c3, 2), vec![c], "conv3 keeps the whole shared bias");
    // equal slices are written once; nothing is left unread
    assert_eq!(c1.inputs[2], c2.inputs[2]);
    assert_ne!(c2.inputs[1], c3.inputs[1]);
    for name in pg.initializers.keys() {
        assert!(
            pg.nodes.iter().any(|n| n.inputs.contains(name)),
            "initializer '{name}' is no longer read"
        );
    }
    // written to disk and read back, as `crosscam prune` does
    let back = Model::from_bytes(&p.model.to_bytes()).unwrap();
    let (shape, out) = run(&back, &x);
    assert_eq!(shape, vec![2, c], "the embedding dimension is unchanged");
    assert!(out.iter().all(|v| v.is_finite()));
}
