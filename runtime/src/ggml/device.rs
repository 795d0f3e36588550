//! The compute devices this build of ggml offers (its backend registry:
//! the CPU always, Vulkan, CUDA or Metal devices when built with them), and
//! the user's choice among them (`--device auto|cpu|vulkan[:N]|cuda[:N]|metal`).

use std::ffi::CStr;
use std::fmt;
use std::str::FromStr;

use ggml_sys as sys;

use super::init_logging;

/// A GPU API ggml can be built with (its backend registry's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuApi {
    Vulkan,
    Cuda,
    Metal,
}

impl GpuApi {
    /// The name `--device` takes.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
            Self::Metal => "metal",
        }
    }

    /// The name of ggml's backend registry for it.
    fn registry(self) -> &'static str {
        match self {
            Self::Vulkan => "Vulkan",
            Self::Cuda => "CUDA",
            Self::Metal => "Metal",
        }
    }

    /// The Cargo feature that builds it in.
    pub fn feature(self) -> &'static str {
        self.flag()
    }
}

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU when the build has a GPU backend and the machine one
    /// (never a software device such as Mesa's lavapipe), else the CPU.
    #[default]
    Auto,
    Cpu,
    /// Device `index` (0 unless given) of a GPU API.
    Gpu {
        api: GpuApi,
        index: usize,
    },
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("unknown device '{s}': expected auto, cpu, vulkan[:N], cuda[:N] or metal");
        let (name, index) = match s.split_once(':') {
            Some((name, n)) => (name, Some(n.parse::<usize>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let gpu = |api| DeviceChoice::Gpu {
            api,
            index: index.unwrap_or(0),
        };
        match (name.to_ascii_lowercase().as_str(), index) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("vulkan", _) => Ok(gpu(GpuApi::Vulkan)),
            ("cuda", _) => Ok(gpu(GpuApi::Cuda)),
            ("metal", None | Some(0)) => Ok(gpu(GpuApi::Metal)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Gpu { api, index } => write!(f, "{}:{index}", api.flag()),
        }
    }
}

/// What kind of device ggml says a device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    IntegratedGpu,
    Accelerator,
}

impl DeviceKind {
    fn of(t: sys::ggml_backend_dev_type) -> Self {
        match t {
            sys::GGML_BACKEND_DEVICE_TYPE_GPU => Self::Gpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => Self::IntegratedGpu,
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => Self::Cpu,
            _ => Self::Accelerator,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::IntegratedGpu => "integrated gpu",
            Self::Accelerator => "accelerator",
        }
    }
}

/// One device of ggml's registry.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// The backend it belongs to ("CPU", "Vulkan", "CUDA", "Metal", …).
    pub backend: String,
    /// Its index among that backend's devices (what `vulkan:N` names).
    pub index: usize,
    /// ggml's name for it (e.g. "Vulkan0") and the driver's description.
    pub name: String,
    pub description: String,
    pub kind: DeviceKind,
    /// Memory in bytes, as the driver reports it (free, total).
    pub memory_free: usize,
    pub memory_total: usize,
    /// ggml's raw index in its registry.
    registry_index: usize,
}

impl DeviceInfo {
    /// A software rendition of a GPU API (Mesa's lavapipe/llvmpipe,
    /// SwiftShader): usable, but never what `auto` should pick.
    pub fn is_software(&self) -> bool {
        let d = self.description.to_ascii_lowercase();
        self.kind == DeviceKind::Cpu
            || ["llvmpipe", "lavapipe", "swiftshader", "softpipe"]
                .iter()
                .any(|s| d.contains(s))
    }

    /// ggml's device, for starting it or allocating there — started once,
    /// under a lock: ggml's Vulkan backend creates a device on its first use
    /// and publishes it before it is ready, so two threads' first uses (two
    /// models loading at once) would race, and the process aborted inside the
    /// Vulkan loader.
    pub(super) fn raw(&self) -> sys::ggml_backend_dev_t {
        static STARTED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        let dev = unsafe { sys::ggml_backend_dev_get(self.registry_index) };
        if self.kind == DeviceKind::Cpu {
            return dev;
        }
        let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        if !started.contains(&self.registry_index) {
            if self.backend == "Vulkan" {
                // ggml's Vulkan backend fuses runs of ops (Snake's five, a
                // product and its bias, …) where the allocator's placement of
                // their tensors allows, which changes with a graph's size: a
                // stream in chunks, or a batch, would then round differently
                // from the whole, or the one. ggml reads this once, when the
                // device starts.
                std::env::set_var("GGML_VK_DISABLE_FUSION", "1");
            }
            // Asking for its buffer type starts the device.
            unsafe { sys::ggml_backend_dev_buffer_type(dev) };
            started.push(self.registry_index);
        }
        dev
    }
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.backend.as_str() {
            "CPU" => "cpu".to_string(),
            other => format!("{}:{}", other.to_ascii_lowercase(), self.index),
        };
        write!(f, "{flag:<10} {} ({}", self.description, self.kind.name())?;
        if self.memory_total > 0 {
            write!(
                f,
                ", {:.1} GiB",
                self.memory_total as f64 / (1u64 << 30) as f64
            )?;
        }
        if self.is_software() && self.backend != "CPU" {
            write!(f, ", software")?;
        }
        write!(f, ")")
    }
}

fn text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Every device of this build's ggml, in registry order (the CPU included).
pub fn devices() -> Vec<DeviceInfo> {
    init_logging();
    let mut per_backend: Vec<(String, usize)> = Vec::new();
    (0..unsafe { sys::ggml_backend_dev_count() })
        .map(|i| unsafe {
            let dev = sys::ggml_backend_dev_get(i);
            let backend = text(sys::ggml_backend_reg_name(
                sys::ggml_backend_dev_backend_reg(dev),
            ));
            let index = match per_backend.iter_mut().find(|(b, _)| *b == backend) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    per_backend.push((backend.clone(), 1));
                    0
                }
            };
            let (mut free, mut total) = (0usize, 0usize);
            sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
            DeviceInfo {
                backend,
                index,
                name: text(sys::ggml_backend_dev_name(dev)),
                description: text(sys::ggml_backend_dev_description(dev)),
                kind: DeviceKind::of(sys::ggml_backend_dev_type(dev)),
                memory_free: free,
                memory_total: total,
                registry_index: i,
            }
        })
        .collect()
}

/// The GPU APIs this build has.
pub fn built_gpu_apis() -> Vec<GpuApi> {
    let mut apis = Vec::new();
    if cfg!(feature = "vulkan") {
        apis.push(GpuApi::Vulkan);
    }
    if cfg!(feature = "cuda") {
        apis.push(GpuApi::Cuda);
    }
    if cfg!(feature = "metal") {
        apis.push(GpuApi::Metal);
    }
    apis
}

/// The device `choice` names on this machine: `None` for the CPU, else
/// the GPU device. Errors name what is missing (the build's backend, or
/// the device) and what there is.
pub fn resolve(choice: DeviceChoice) -> Result<Option<DeviceInfo>, String> {
    let all = devices();
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Auto => Ok(all.into_iter().find(|d| {
            d.backend != "CPU"
                && matches!(d.kind, DeviceKind::Gpu | DeviceKind::IntegratedGpu)
                && !d.is_software()
        })),
        DeviceChoice::Gpu { api, index } => {
            if !built_gpu_apis().contains(&api) {
                return Err(format!(
                    "--device {choice}: this build has no {} backend (rebuild with \
                     `cargo build --release --features {}`; see the README)",
                    api.registry(),
                    api.feature()
                ));
            }
            let of_api: Vec<DeviceInfo> = all
                .into_iter()
                .filter(|d| d.backend == api.registry())
                .collect();
            let count = of_api.len();
            of_api
                .into_iter()
                .find(|d| d.index == index)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "--device {choice}: no such {} device ({count} found; \
                         `--list-devices` shows them)",
                        api.registry()
                    )
                })
        }
    }
}

/// `--list-devices`: one line per device, then the GPU backends built in.
pub fn listing() -> String {
    let mut out: String = devices().iter().map(|d| format!("{d}\n")).collect();
    let built: Vec<&str> = built_gpu_apis().iter().map(|a| a.flag()).collect();
    out += &match built.is_empty() {
        true => "(this build has no GPU backend: --features vulkan, cuda or metal)\n".to_string(),
        false => format!("(GPU backends in this build: {})\n", built.join(", ")),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_refuses_others() {
        let ok = |s: &str| s.parse::<DeviceChoice>().unwrap();
        assert_eq!(ok("auto"), DeviceChoice::Auto);
        assert_eq!(ok("CPU"), DeviceChoice::Cpu);
        assert_eq!(
            ok("vulkan"),
            DeviceChoice::Gpu {
                api: GpuApi::Vulkan,
                index: 0
            }
        );
        assert_eq!(
            ok("cuda:1"),
            DeviceChoice::Gpu {
                api: GpuApi::Cuda,
                index: 1
            }
        );
        assert_eq!(ok("metal").to_string(), "metal:0");
        for bad in ["gpu", "vulkan:x", "cpu:0", "metal:1", "", "cuda:-1"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(
                e.contains(&format!("'{bad}'")) && e.contains("vulkan[:N]"),
                "{e}"
            );
        }
    }

    #[test]
    fn lists_the_cpu_and_resolves_choices() {
        let all = devices();
        assert!(
            all.iter()
                .any(|d| d.backend == "CPU" && d.kind == DeviceKind::Cpu),
            "{all:?}"
        );
        assert!(resolve(DeviceChoice::Cpu).unwrap().is_none());
        // auto never takes a software device, and takes the CPU without a GPU
        if let Some(d) = resolve(DeviceChoice::Auto).unwrap() {
            assert!(!d.is_software(), "{d}");
        }
        let missing = GpuApi::Cuda;
        if !built_gpu_apis().contains(&missing) {
            let e = resolve(DeviceChoice::Gpu {
                api: missing,
                index: 0,
            })
            .unwrap_err();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }

    /// The Vulkan build on this machine's Vulkan device (in CI Mesa's
    /// software device, lavapipe, which ggml lists only with
    /// `GGML_VK_VISIBLE_DEVICES=0`): a graph of standard ops — a product,
    /// RMSNorm, Snake's sin², a softmax — computed there, not on the CPU
    /// fallback, equals the CPU's within F32 rounding.
    #[cfg(feature = "vulkan")]
    #[test]
    fn vulkan_device_computes_a_graph() {
        use crate::ggml::{Backend, GgmlType, OwnedGraph, Slot};
        use std::sync::Arc;

        let device = resolve(DeviceChoice::Gpu {
            api: GpuApi::Vulkan,
            index: 0,
        })
        .unwrap_or_else(|e| {
            panic!("{e} (with only Mesa's lavapipe, set GGML_VK_VISIBLE_DEVICES=0)")
        })
        .expect("a Vulkan device");
        eprintln!("Vulkan device: {device}");
        let (k, n, m) = (64i64, 48i64, 8i64);
        let a: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        let b: Vec<f32> = (0..k * m)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.02)
            .collect();
        let run = |backend: &Arc<Backend>| {
            let mut g = OwnedGraph::build(backend, 64, |ctx| {
                let at = ctx.new_tensor(GgmlType::F32, &[k, n]).set_input();
                let bt = ctx.new_tensor(GgmlType::F32, &[k, m]).set_input();
                let y = ctx.mul_mat(at, bt); // [n, m]
                let y = ctx.rms_norm(y, 1e-6);
                let alpha = ctx.new_tensor(GgmlType::F32, &[n]).set_input();
                let y = ctx.snake(y, alpha, alpha);
                let y = ctx.soft_max_ext(y, None, 1.0);
                let io: [Slot; 4] = [ctx.slot(at), ctx.slot(bt), ctx.slot(alpha), ctx.slot(y)];
                (io, vec![y])
            });
            let io = *g.io();
            g.compute(|g| {
                g.tensor(io[0]).set_f32(&a);
                g.tensor(io[1]).set_f32(&b);
                g.tensor(io[2]).set_f32(&vec![0.7; n as usize]);
            })
            .unwrap();
            (g.tensor(io[3]).get_f32(), g.backend_of(io[3]))
        };
        let gpu = Arc::new(Backend::gpu(&device).unwrap());
        let (got, on) = run(&gpu);
        let (want, _) = run(&Arc::new(Backend::cpu(2)));
        assert_eq!(
            on.as_deref(),
            Some(device.name.as_str()),
            "computed on {on:?}"
        );
        assert_eq!(gpu.custom_ops_built(), 0);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
    }

    /// Threads starting the Vulkan device at once (models loading in
    /// parallel) each get a working backend: ggml publishes a device before
    /// it is ready, and an unguarded second user aborted the process in the
    /// Vulkan loader (`vkCreateFence`).
    #[cfg(feature = "vulkan")]
    #[test]
    fn threads_starting_the_device_at_once_each_get_it() {
        use crate::ggml::{Backend, GgmlType, TensorStore};
        use std::sync::{Arc, Barrier};

        let device = resolve(DeviceChoice::Gpu {
            api: GpuApi::Vulkan,
            index: 0,
        })
        .unwrap()
        .expect("a Vulkan device");
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (device, start) = (device.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let store = if t % 2 == 0 {
                        let specs = [("w".to_string(), GgmlType::F32, vec![4])];
                        let cpu = TensorStore::new(&specs);
                        cpu.get("w").unwrap().set_bytes_at(0, &[t; 16]);
                        Some(cpu.upload_to(Some(&device)))
                    } else {
                        None
                    };
                    let gpu = Backend::gpu(&device).unwrap();
                    (
                        gpu.device().map(|d| d.name.clone()),
                        store.map(|s| s.get("w").unwrap().get_bytes()),
                    )
                })
            })
            .collect();
        for (t, th) in threads.into_iter().enumerate() {
            let (name, bytes) = th.join().unwrap();
            assert_eq!(name.as_deref(), Some(device.name.as_str()));
            if t % 2 == 0 {
                assert_eq!(bytes, Some(vec![t as u8; 16]));
            }
        }
    }

    /// A store uploaded to the Vulkan device holds the same bytes, and a
    /// store made there is in the device's memory (not the CPU's).
    #[cfg(feature = "vulkan")]
    #[test]
    fn stores_upload_to_the_vulkan_device() {
        use crate::ggml::{Backend, GgmlType, TensorStore};

        let device = resolve(DeviceChoice::Gpu {
            api: GpuApi::Vulkan,
            index: 0,
        })
        .unwrap()
        .expect("a Vulkan device");
        let gpu = Backend::gpu(&device).unwrap();
        let specs = [
            ("w".to_string(), GgmlType::F32, vec![7, 5]),
            ("b".to_string(), GgmlType::F16, vec![9]),
        ];
        let cpu = TensorStore::new(&specs);
        let w: Vec<u8> = (0..7 * 5 * 4).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..9 * 2).map(|i| (i * 13) as u8).collect();
        cpu.get("w").unwrap().set_bytes_at(0, &w);
        cpu.get("b").unwrap().set_bytes_at(0, &b);
        let on = cpu.upload_to(gpu.device());
        assert_eq!(on.get("w").unwrap().get_bytes(), w);
        assert_eq!(on.get("b").unwrap().get_bytes(), b);
        assert_eq!(on.get("w").unwrap().ne()[..2], [7, 5]);
        assert!(on.size() >= w.len() + b.len());
        assert!(!on.is_host(), "the upload is in the device's memory");
        assert!(cpu.is_host());
    }

    /// A weight larger than the device's buffers may be (lavapipe refuses
    /// this 160 MiB table; the real text embedding is 330 MB) stays in host
    /// memory at upload, and a graph on the device reads it through the
    /// CPU (ggml's scheduler aborted the process on it before).
    #[cfg(feature = "vulkan")]
    #[test]
    fn a_weight_over_the_devices_limits_stays_on_the_host() {
        use crate::ggml::{Backend, GgmlType, OwnedGraph, Slot, TensorStore};
        use std::sync::Arc;

        let device = resolve(DeviceChoice::Gpu {
            api: GpuApi::Vulkan,
            index: 0,
        })
        .unwrap()
        .expect("a Vulkan device");
        let (width, rows) = (256i64, 160 * 1024i64); // 160 MiB of F32
        let specs = [
            ("table".to_string(), GgmlType::F32, vec![width, rows]),
            ("scale".to_string(), GgmlType::F32, vec![width]),
        ];
        let cpu = TensorStore::new(&specs);
        let row = |r: i64| -> Vec<f32> { (0..width).map(|i| (r * 7 + i) as f32 * 0.001).collect() };
        let picked = [3i32, 100_000, (rows - 1) as i32];
        for &r in &picked {
            let bytes: Vec<u8> = row(r as i64).iter().flat_map(|v| v.to_le_bytes()).collect();
            cpu.get("table")
                .unwrap()
                .set_bytes_at(r as usize * width as usize * 4, &bytes);
        }
        let scale: Vec<u8> = (0..width).flat_map(|_| 2.0f32.to_le_bytes()).collect();
        cpu.get("scale").unwrap().set_bytes_at(0, &scale);
        let on = cpu.upload_to(Some(&device));
        assert!(
            on.get("table").unwrap().is_host(),
            "the table stays on the host"
        );
        assert!(!on.get("scale").unwrap().is_host(), "the rest is uploaded");

        let gpu = Arc::new(Backend::gpu(&device).unwrap());
        let mut g = OwnedGraph::build(&gpu, 16, |ctx| {
            let ids = ctx.new_tensor(GgmlType::I32, &[3]).set_input();
            let x = ctx.get_rows(ctx.stored(&on.get("table").unwrap()), ids);
            let y = ctx.mul(x, ctx.stored(&on.get("scale").unwrap()));
            let io: [Slot; 2] = [ctx.slot(ids), ctx.slot(y)];
            (io, vec![y])
        });
        let io = *g.io();
        g.compute(|g| g.tensor(io[0]).set_i32(&picked)).unwrap();
        let got = g.tensor(io[1]).get_f32();
        let want: Vec<f32> = picked
            .iter()
            .flat_map(|&r| row(r as i64).into_iter().map(|v| v * 2.0))
            .collect();
        assert_eq!(got, want);
        assert_eq!(g.backend_of(io[1]).as_deref(), Some(device.name.as_str()));
    }
}
