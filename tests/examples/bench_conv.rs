//! One vocoder convolution at a time on the CPU backend: the direct
//! product against the fast convolution for every residual-unit shape of
//! the real-size decoder (channels, dilation, samples per frame), 25
//! frames per call, F32 kernels; milliseconds per call (min of the runs) and
//! the direct arithmetic's GFLOP/s at that speed.
//!
//!     bench_conv [threads 2] [runs 5]

use std::sync::Arc;
use std::time::Instant;

use qwen3_tts::ggml::{Backend, ConvKernel, GgmlType, OwnedGraph, Slot};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: usize| {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (threads, runs) = (arg(1, 2), arg(2, 5));
    let backend = Arc::new(Backend::cpu(threads));
    let frames = 25;
    let k = 7;
    println!("| c_in → c_out | dilation | samples/frame | direct ms | fast ms | speed-up | direct GFLOP/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut shapes = vec![(1024, 1536, 1, 4)];
    for (c, s) in [(768, 32), (384, 160), (192, 640), (96, 1920)] {
        for d in [1, 3, 9] {
            shapes.push((c, c, d, s));
        }
    }
    for (c_in, c_out, d, segment) in shapes {
        let n = segment * frames;
        let len = (k - 1) * d + n;
        let x: Vec<f32> = (0..c_in * len)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        let w: Vec<f32> = (0..k * c_in * c_out)
            .map(|i| ((i * 104729 % 1000) as f32 - 500.0) * 1e-5)
            .collect();
        let mut ms = [0.0f64; 2];
        for (slot, layout) in [ConvKernel::Unfolded { k }, ConvKernel::Winograd { k }]
            .into_iter()
            .enumerate()
        {
            let kernel: Vec<f32> = match layout {
                ConvKernel::Winograd { .. } => ConvKernel::winograd_kernel(k, &w, c_in, c_out),
                _ => w.clone(), // the layout does not matter for the timing
            };
            let dims = layout.dims(c_in, c_out).map(|d| d as i64);
            let mut g = OwnedGraph::build(&backend, 1024, |ctx| {
                ctx.set_column_invariant(true);
                let xt = ctx
                    .new_tensor(GgmlType::F32, &[c_in as i64, len as i64])
                    .set_input();
                let wt = ctx.new_tensor(GgmlType::F32, &dims).set_input();
                let y = ctx.causal_conv(xt, wt, layout, None, d, segment);
                let io: [Slot; 2] = [ctx.slot(xt), ctx.slot(wt)];
                (io, vec![y])
            });
            let io = *g.io();
            let mut best = f64::INFINITY;
            for r in 0..=runs {
                let t = Instant::now();
                g.compute(|g| {
                    if r == 0 {
                        g.tensor(io[0]).set_f32(&x);
                        g.tensor(io[1]).set_f32(&kernel);
                    }
                })
                .unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            ms[slot] = best * 1000.0;
        }
        let flops = 2.0 * (c_in * c_out * k * n) as f64;
        println!(
            "| {c_in} → {c_out} | {d} | {segment} | {:.1} | {:.1} | {:.2}× | {:.0} |",
            ms[0],
            ms[1],
            ms[0] / ms[1],
            flops / ms[0] * 1e-6
        );
    }
}
