//! Resource use of a process and all its descendants, read from /proc once a second: CPU time (user + system,
//! including reaped children) and resident memory. Also plateau's own CPU time, which the engine watches, and the
//! members of a process group (what a stopped server left behind). The one /proc scanner for all of them.

use std::collections::HashMap;
use std::time::Instant;

use super::{ResourceSample, ResourceSource};

/// One process as /proc/<pid>/stat describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStat {
    pid: i32,
    parent: i32,
    /// `R`, `S`, ..., `Z` for a zombie.
    state: char,
    group: i32,
    /// User and system time of the process itself ...
    cpu_ticks: u64,
    /// ... and of its children that have been waited for.
    reaped_children_cpu_ticks: u64,
    resident_pages: u64,
}

/// Parses /proc/<pid>/stat. The command name may hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Option<ProcessStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14) ... rss(21).
    let number = |index: usize| fields.get(index).and_then(|field| field.parse::<i64>().ok());
    let ticks = |indices: [usize; 2]| indices.iter().map(|&index| number(index).unwrap_or(0).max(0) as u64).sum();
    Some(ProcessStat {
        pid,
        parent: number(1)? as i32,
        state: fields.first()?.chars().next()?,
        group: number(2)? as i32,
        cpu_ticks: ticks([11, 12]),
        reaped_children_cpu_ticks: ticks([13, 14]),
        resident_pages: number(21)?.max(0) as u64,
    })
}

fn all_processes() -> Vec<ProcessStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let pid: i32 = name.to_str()?.parse().ok()?;
            parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
        })
        .collect()
}

/// Processes still in a process group, zombies aside (they are gone in all but name).
pub fn group_members(group: i32) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|process| process.group == group && process.state != 'Z')
        .map(|process| process.pid)
        .collect()
}

/// The cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The machine's physical memory, from /proc/meminfo.
pub fn machine_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// The root and everything below it.
fn tree(processes: &[ProcessStat], root: i32) -> Vec<ProcessStat> {
    let mut children: HashMap<i32, Vec<&ProcessStat>> = HashMap::new();
    for process in processes {
        children.entry(process.parent).or_default().push(process);
    }
    let mut found: Vec<ProcessStat> = processes.iter().filter(|process| process.pid == root).copied().collect();
    let mut index = 0;
    while index < found.len() {
        let pid = found[index].pid;
        found.extend(children.get(&pid).into_iter().flatten().map(|process| **process));
        index += 1;
    }
    found
}

/// CPU time between two readings as a percentage of some cores.
struct CpuMeter {
    cores: f64,
    ticks_per_second: f64,
    last: Option<(Instant, u64)>,
}

impl CpuMeter {
    fn new(cores: usize) -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self { cores: cores.max(1) as f64, ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 }, last: None }
    }

    /// The share since the last reading; none at the first.
    fn percent(&mut self, cpu_ticks: u64) -> Option<f64> {
        let now = Instant::now();
        let percent = self.last.map(|(then, ticks_then)| {
            let busy_s = cpu_ticks.saturating_sub(ticks_then) as f64 / self.ticks_per_second;
            busy_s / now.duration_since(then).as_secs_f64().max(1e-3) / self.cores * 100.0
        });
        self.last = Some((now, cpu_ticks));
        percent
    }
}

/// plateau's own CPU use, as a percentage of the CPU time its cores could give it: a load generator near 100% is out
/// of CPU, and its measurements are its own limit, not the server's. On a virtual machine the hypervisor may take a
/// share of each core (steal time); a generator pinned to a core with 11% stolen can never use more than 89% of it,
/// so the stolen share is taken out of what it could have used.
#[derive(Default)]
pub struct OwnCpu {
    meter: Option<CpuMeter>,
    /// The machine's stolen and total CPU ticks at the last reading.
    machine_last: Option<MachineTicks>,
}

impl OwnCpu {
    pub fn sample(&mut self) -> Option<f64> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let percent = self.meter.get_or_insert_with(|| CpuMeter::new(available_cores())).percent(stat.cpu_ticks);
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|text| parse_machine_ticks(&text));
        let available_share = match (self.machine_last, machine) {
            (Some(then), Some(now)) => now.available_share_since(then),
            _ => 1.0,
        };
        self.machine_last = machine.or(self.machine_last);
        // The machine's steal is spread over its cores, not always evenly over this process's: never above all.
        percent.map(|percent| (percent / available_share).min(100.0))
    }
}

/// The first line of /proc/stat: CPU time of all cores, in ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MachineTicks {
    steal: u64,
    total: u64,
}

impl MachineTicks {
    /// The share of the machine's CPU time since `then` that the hypervisor did not take; never below a tenth, so
    /// a reading across a pause of the whole VM cannot make a figure explode.
    fn available_share_since(self, then: MachineTicks) -> f64 {
        let total = self.total.saturating_sub(then.total);
        if total == 0 {
            return 1.0;
        }
        let stolen = self.steal.saturating_sub(then.steal) as f64 / total as f64;
        (1.0 - stolen).clamp(0.1, 1.0)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: guest time is already inside user time.
fn parse_machine_ticks(text: &str) -> Option<MachineTicks> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().take(8).map(|field| field.parse().ok()).collect::<Option<_>>()?;
    let steal = *fields.get(7)?;
    Some(MachineTicks { steal, total: fields.iter().sum() })
}

/// Samples a server's process tree: CPU as a percentage of the cores it may use, memory as a percentage of
/// its limit (or of the machine).
pub struct ProcessTree {
    root: i32,
    cpu: CpuMeter,
    memory_limit_bytes: f64,
    page_bytes: f64,
}

impl ProcessTree {
    pub fn new(root: i32, allowed_cores: usize, memory_limit_bytes: Option<u64>) -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            root,
            cpu: CpuMeter::new(allowed_cores),
            memory_limit_bytes: memory_limit_bytes.or_else(machine_memory_bytes).unwrap_or(u64::MAX) as f64,
            page_bytes: if page > 0 { page as f64 } else { 4096.0 },
        }
    }
}

impl ResourceSource for ProcessTree {
    fn label(&self) -> &'static str {
        "/proc (the server's process tree)"
    }

    fn sample(&mut self) -> ResourceSample {
        let processes = tree(&all_processes(), self.root);
        if processes.is_empty() {
            return ResourceSample::default();
        }
        let cpu_ticks: u64 =
            processes.iter().map(|process| process.cpu_ticks + process.reaped_children_cpu_ticks).sum();
        let resident_bytes =
            processes.iter().map(|process| process.resident_pages).sum::<u64>() as f64 * self.page_bytes;
        ResourceSample {
            cpu_percent: self.cpu.percent(cpu_ticks),
            memory_percent: Some(resident_bytes / self.memory_limit_bytes * 100.0),
            ..ResourceSample::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let line = "4242 (my (odd) server) S 4200 4242 4242 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 4 0 1000 123456 789 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        let expected = ProcessStat {
            pid: 4242,
            parent: 4200,
            state: 'S',
            group: 4242,
            cpu_ticks: 150 + 50,
            reaped_children_cpu_ticks: 7 + 3,
            resident_pages: 789,
        };
        assert_eq!(stat, expected);
    }

    #[test]
    fn the_tree_holds_descendants_only() {
        let process = |pid, parent| ProcessStat {
            pid,
            parent,
            state: 'S',
            group: pid,
            cpu_ticks: 0,
            reaped_children_cpu_ticks: 0,
            resident_pages: 0,
        };
        let processes = [process(1, 0), process(10, 1), process(11, 10), process(12, 11), process(20, 1)];
        let mut pids: Vec<i32> = tree(&processes, 10).iter().map(|process| process.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12]);
    }

    #[test]
    fn a_busy_child_shows_as_cpu_use() {
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let mut sampler = ProcessTree::new(std::process::id() as i32, 1, None);
        sampler.sample();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let sample = sampler.sample();
        child.kill().unwrap();
        child.wait().unwrap();
        let cpu = sample.cpu_percent.unwrap();
        assert!(cpu > 50.0, "a spinning child of this test process used {cpu}% of a core");
        assert!(sample.memory_percent.unwrap() > 0.0);
    }

    #[test]
    fn stolen_cpu_time_is_taken_out_of_what_the_generator_could_use() {
        let then = parse_machine_ticks("cpu  1000 0 200 5000 10 0 5 100 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(then, MachineTicks { steal: 100, total: 6315 });
        // 1,000 ticks later, 110 of them stolen: 89% of the machine was there to use.
        let now = MachineTicks { steal: 210, total: 7315 };
        assert!((now.available_share_since(then) - 0.89).abs() < 1e-12);
        assert_eq!(then.available_share_since(then), 1.0, "no time passed");
        assert_eq!(MachineTicks { steal: 1100, total: 7315 }.available_share_since(then), 0.1, "bounded");
        assert_eq!(parse_machine_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn own_cpu_counts_this_process_busy_threads() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut own = OwnCpu::default();
        assert_eq!(own.sample(), None, "the first reading has nothing to compare with");
        let spin_until = Instant::now() + std::time::Duration::from_millis(500);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let percent = own.sample().unwrap();
        // One thread spinning for the whole interval is one core's worth.
        assert!(percent > 60.0 / cores && percent <= 100.0 + 1.0, "{percent}% of {cores} cores");
    }
}
