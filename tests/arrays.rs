//! Raw arrays through the public API: round trips for every element type and 1 to 4
//! dimensions from any memory layout, kind mismatches, views that outlive removal and
//! overwrite, writers that commit or leave nothing, reopening, and damage detection.
#![cfg(feature = "ndarray")]

use std::path::Path;

use spillchest::ndarray::{Array, ArrayD, Axis, Dimension, Ix1, Ix2, Ix3, Ix4, IxDyn, s};
use spillchest::{Chest, Element, Error};

type Store = Chest<String, Vec<u8>>;

fn persistent(path: &Path) -> Store {
    Chest::builder().path(path).budget(1 << 20).open().unwrap()
}

/// An array of `shape` whose elements differ, converted to `T` by `f`.
fn sample<T, D: Dimension>(shape: D, f: impl Fn(usize) -> T) -> Array<T, D> {
    let n = shape.size();
    Array::from_shape_vec(shape, (0..n).map(f).collect()).unwrap()
}

fn round_trips_for<T>(f: impl Fn(usize) -> T + Copy)
where
    T: Element + PartialEq + std::fmt::Debug,
{
    let chest = Store::with_budget(1 << 20).unwrap();
    // 1 to 4 dimensions, standard layout.
    let a1 = sample(Ix1(7), f);
    let a2 = sample(Ix2(5, 6), f);
    let a3 = sample(Ix3(2, 3, 4), f);
    let a4 = sample(Ix4(2, 3, 2, 5), f);
    chest.insert_array("a1".into(), &a1).unwrap();
    chest.insert_array("a2".into(), &a2).unwrap();
    chest.insert_array("a3".into(), &a3).unwrap();
    chest.insert_array("a4".into(), &a4).unwrap();
    assert_eq!(
        chest
            .get_array::<T, Ix1>(&"a1".into())
            .unwrap()
            .unwrap()
            .view(),
        a1
    );
    assert_eq!(
        chest
            .get_array::<T, Ix2>(&"a2".into())
            .unwrap()
            .unwrap()
            .view(),
        a2
    );
    assert_eq!(
        chest
            .get_array::<T, Ix3>(&"a3".into())
            .unwrap()
            .unwrap()
            .view(),
        a3
    );
    assert_eq!(
        chest
            .get_array::<T, Ix4>(&"a4".into())
            .unwrap()
            .unwrap()
            .view(),
        a4
    );
    // Non-standard layouts on the way in: transposed, sliced with steps, reversed, a column.
    let inputs: Vec<(&str, ArrayD<T>)> = vec![
        ("t2", a2.t().to_owned().into_dyn()),
        ("t4", a4.view().reversed_axes().to_owned().into_dyn()),
        ("s3", a3.slice(s![.., 1.., ..;2]).to_owned().into_dyn()),
        ("r1", a1.slice(s![..;-2]).to_owned().into_dyn()),
        ("c2", a2.column(3).to_owned().into_dyn()),
    ];
    let views: Vec<(&str, ArrayD<T>)> = vec![
        ("t2", a2.t().into_dyn().to_owned()),
        ("t4", a4.view().reversed_axes().into_dyn().to_owned()),
        ("s3", a3.slice(s![.., 1.., ..;2]).into_dyn().to_owned()),
        ("r1", a1.slice(s![..;-2]).into_dyn().to_owned()),
        ("c2", a2.column(3).into_dyn().to_owned()),
    ];
    // Store the strided views themselves, not owned copies.
    chest.insert_array("t2".into(), &a2.t()).unwrap();
    chest
        .insert_array("t4".into(), &a4.view().reversed_axes())
        .unwrap();
    chest
        .insert_array("s3".into(), &a3.slice(s![.., 1.., ..;2]))
        .unwrap();
    chest
        .insert_array("r1".into(), &a1.slice(s![..;-2]))
        .unwrap();
    chest.insert_array("c2".into(), &a2.column(3)).unwrap();
    for ((name, expected), (_, logical)) in inputs.iter().zip(&views) {
        assert_eq!(expected, logical);
        let got = chest
            .get_array::<T, IxDyn>(&(*name).into())
            .unwrap()
            .unwrap();
        assert_eq!(got.view(), expected.view(), "{name}");
        assert!(got.view().is_standard_layout());
        got.verify().unwrap();
    }
    // The memory budget is untouched by arrays.
    assert_eq!(chest.stats().memory_bytes, 0);
    assert_eq!(chest.len(), 9);
}

#[test]
fn every_element_type_round_trips_in_1_to_4_dimensions_from_any_layout() {
    round_trips_for(|i| i as f32 * 0.5 - 3.0);
    round_trips_for(|i| i as f64 * -1.25 + 0.1);
    round_trips_for(|i| (i as i64 - 60) as i8);
    round_trips_for(|i| (i as i16).wrapping_mul(-301));
    round_trips_for(|i| (i as i32).wrapping_mul(-70_001));
    round_trips_for(|i| (i as i64).wrapping_mul(-7_000_000_001));
    round_trips_for(|i| (i * 7) as u8);
    round_trips_for(|i| (i as u16).wrapping_mul(1009));
    round_trips_for(|i| (i as u32).wrapping_mul(2_654_435_761));
    round_trips_for(|i| (i as u64).wrapping_mul(11_400_714_819_323_198_485));
}

#[test]
fn empty_and_zero_dimensional_arrays_round_trip() {
    let chest = Store::with_budget(1 << 20).unwrap();
    let empty = Array::<f64, _>::zeros((0, 4));
    chest.insert_array("empty".into(), &empty).unwrap();
    let got = chest
        .get_array::<f64, Ix2>(&"empty".into())
        .unwrap()
        .unwrap();
    assert_eq!(got.shape(), &[0, 4]);
    assert!(got.is_empty());
    let scalar = spillchest::ndarray::arr0(2.5f32);
    chest.insert_array("scalar".into(), &scalar).unwrap();
    let got = chest
        .get_array::<f32, spillchest::ndarray::Ix0>(&"scalar".into())
        .unwrap()
        .unwrap();
    assert_eq!(got.view().into_scalar(), &2.5);
}

#[test]
fn wrong_type_or_dimensions_is_an_error_never_a_reinterpretation() {
    let chest = Store::with_budget(1 << 20).unwrap();
    chest
        .insert_array("a".into(), &sample(Ix2(4, 4), |i| i as f64))
        .unwrap();
    chest.insert("plain".into(), vec![1, 2, 3]).unwrap();
    let kind = |r: spillchest::Result<_>| matches!(r, Err(Error::KindMismatch { .. }));
    assert!(kind(chest.get_array::<f32, Ix2>(&"a".into()).map(|_| ())));
    assert!(kind(chest.get_array::<u64, Ix2>(&"a".into()).map(|_| ())));
    assert!(kind(chest.get_array::<f64, Ix1>(&"a".into()).map(|_| ())));
    assert!(kind(chest.get_array::<f64, Ix3>(&"a".into()).map(|_| ())));
    assert!(
        chest
            .get_array::<f64, IxDyn>(&"a".into())
            .unwrap()
            .is_some()
    );
    // A serialized value is not an array, in memory or on disk; an array is not a value.
    assert!(kind(
        chest.get_array::<u8, Ix1>(&"plain".into()).map(|_| ())
    ));
    let err = chest.get(&"a".into()).unwrap_err();
    assert!(matches!(err, Error::KindMismatch { .. }), "{err}");
    assert!(err.to_string().contains("get_array"), "{err}");
    assert!(kind(chest.update(&"a".into(), |v| v.push(1)).map(|_| ())));
    // The failed update left the array intact.
    assert!(chest.get_array::<f64, Ix2>(&"a".into()).unwrap().is_some());
    let big = Store::with_budget(16).unwrap();
    big.insert("spilled".into(), vec![7; 1000]).unwrap();
    assert!(big.stats().on_disk > 0);
    assert!(kind(
        big.get_array::<u8, Ix1>(&"spilled".into()).map(|_| ())
    ));
    assert!(
        chest
            .get_array::<f64, Ix2>(&"absent".into())
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_view_outlives_removal_and_overwrite_of_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let chest = persistent(&dir.path().join("c.chest"));
    let original = sample(Ix2(64, 64), |i| i as u32);
    chest.insert_array("k".into(), &original).unwrap();
    let first = chest.get_array::<u32, Ix2>(&"k".into()).unwrap().unwrap();
    chest
        .insert_array("k".into(), &sample(Ix2(3, 3), |i| i as u32 + 100))
        .unwrap();
    let second = chest.get_array::<u32, Ix2>(&"k".into()).unwrap().unwrap();
    chest.insert("k".into(), vec![1; 10]).unwrap();
    chest.flush().unwrap();
    assert_eq!(first.view(), original);
    first.verify().unwrap();
    assert_eq!(second.shape(), &[3, 3]);
    assert!(chest.remove(&"k".into()).unwrap());
    let mut writer = chest.create_array::<u32, Ix1>("k".into(), 5).unwrap();
    writer.as_slice_mut().fill(9);
    writer.commit().unwrap();
    assert!(chest.remove(&"k".into()).unwrap());
    assert_eq!(first.view(), original);
    assert_eq!(second.view()[(2, 2)], 108);
    second.verify().unwrap();
    drop(chest);
    assert_eq!(first.view().sum(), original.sum());
}

#[test]
fn create_array_commits_in_place_or_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let chest = persistent(&path);
    let mut writer = chest
        .create_array::<i16, Ix3>("w".into(), (2, 3, 4))
        .unwrap();
    assert_eq!(writer.shape(), &[2, 3, 4]);
    {
        let mut view = writer.as_array_mut();
        assert!(view.iter().all(|&x| x == 0));
        for (i, x) in view.iter_mut().enumerate() {
            *x = i as i16 - 5;
        }
        view.index_axis_mut(Axis(0), 1).fill(42);
    }
    // The chest stays usable while a writer is open, even for the same key.
    chest.insert("w".into(), vec![5]).unwrap();
    chest.insert("other".into(), vec![6]).unwrap();
    writer.commit().unwrap();
    let got = chest.get_array::<i16, Ix3>(&"w".into()).unwrap().unwrap();
    assert_eq!(got.view()[(0, 2, 3)], 11 - 5);
    assert_eq!(got.view()[(1, 0, 0)], 42);
    got.verify().unwrap();

    let files_before = count_files(&path);
    let mut dropped = chest
        .create_array::<f64, Ix2>("never".into(), (100, 100))
        .unwrap();
    dropped.as_slice_mut().fill(1.0);
    drop(dropped);
    assert!(!chest.contains_key(&"never".into()));
    assert_eq!(
        count_files(&path),
        files_before,
        "a dropped writer left a file"
    );
    assert_eq!(chest.len(), 2);
    chest.close().unwrap();

    let chest = persistent(&path);
    assert_eq!(chest.len(), 2);
    let got = chest.get_array::<i16, Ix3>(&"w".into()).unwrap().unwrap();
    assert_eq!(got.view()[(1, 2, 3)], 42);
    assert_eq!(chest.stats().mended_on_open, 0);
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

fn value_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("values")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "val") {
                out.push(p);
            }
        }
    }
    out
}

/// Run as a child process by the test below: inserts an array without a flush, then dies.
fn crash_after_unflushed_insert(path: &Path, a: &Array<f64, Ix2>) -> ! {
    let chest = persistent(path);
    chest.insert_array("b".into(), a).unwrap();
    std::process::abort();
}

#[test]
fn arrays_survive_reopen_and_unflushed_ones_are_verified_on_open() {
    let a = sample(Ix2(300, 200), |i| i as f64 / 3.0);
    if let Some(path) = std::env::var_os("SPILLCHEST_ARRAYS_CHILD") {
        crash_after_unflushed_insert(Path::new(&path), &a);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    {
        let chest = persistent(&path);
        chest.insert_array("a".into(), &a).unwrap();
        chest.insert("v".into(), vec![1, 2, 3]).unwrap();
        chest.close().unwrap();
    }
    {
        let chest = persistent(&path);
        assert_eq!(chest.len(), 2);
        assert_eq!(chest.keys().len(), 2);
        assert_eq!(
            chest
                .get_array::<f64, Ix2>(&"a".into())
                .unwrap()
                .unwrap()
                .view(),
            a
        );
        assert_eq!(
            chest.get(&"v".into()).unwrap().as_deref(),
            Some(&vec![1, 2, 3])
        );
    }
    // A child process inserts "b" after the last commit and aborts without a flush.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "arrays_survive_reopen_and_unflushed_ones_are_verified_on_open",
        ])
        .arg("--nocapture")
        .env("SPILLCHEST_ARRAYS_CHILD", &path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    // Arrays always get a value file of their own; the small value "v" is a segment record.
    let before = value_files(&path);
    assert_eq!(before.len(), 2);
    {
        // Intact, it is verified on open and adopted.
        let chest = persistent(&path);
        assert_eq!(
            chest
                .get_array::<f64, Ix2>(&"b".into())
                .unwrap()
                .unwrap()
                .view(),
            a
        );
        assert_eq!(chest.len(), 3);
        std::mem::drop(chest);
    }
    // Again, but with one element byte of "b" damaged: open discards it, the rest survives.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "arrays_survive_reopen_and_unflushed_ones_are_verified_on_open",
        ])
        .env("SPILLCHEST_ARRAYS_CHILD", &path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    let b = value_files(&path)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut bytes = std::fs::read(&b).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&b, &bytes).unwrap();
    let chest = persistent(&path);
    assert!(chest.get_array::<f64, Ix2>(&"b".into()).unwrap().is_none());
    assert_eq!(chest.stats().mended_on_open, 1);
    assert_eq!(
        chest
            .get_array::<f64, Ix2>(&"a".into())
            .unwrap()
            .unwrap()
            .view(),
        a
    );
}

#[test]
fn damaged_array_files_are_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let chest = persistent(&path);
    chest
        .insert_array("a".into(), &sample(Ix1(1000), |i| i as u64))
        .unwrap();
    chest.flush().unwrap();
    let file = value_files(&path).pop().unwrap();
    let good = std::fs::read(&file).unwrap();
    let payload_at = good.len() - (1000 * 8 + 64);
    // A flipped shape byte fails the array header checksum on every map; a flipped element
    // fails verify(); a truncated file fails the length check.
    for (at, on_map) in [
        (payload_at + 16, true),
        (payload_at + 12, true),
        (good.len() - 3, false),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&file, &bad).unwrap();
        match chest.get_array::<u64, Ix1>(&"a".into()) {
            Err(Error::Corrupt { path, .. }) => {
                assert!(on_map, "byte {at}");
                assert_eq!(path, file);
            }
            Ok(Some(view)) => {
                assert!(!on_map, "byte {at}");
                assert!(matches!(view.verify(), Err(Error::Corrupt { .. })));
            }
            other => panic!("byte {at}: {other:?}"),
        }
    }
    std::fs::write(&file, &good[..good.len() - 8]).unwrap();
    assert!(matches!(
        chest.get_array::<u64, Ix1>(&"a".into()),
        Err(Error::Corrupt { .. })
    ));
    std::fs::write(&file, &good).unwrap();
    chest
        .get_array::<u64, Ix1>(&"a".into())
        .unwrap()
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn large_plain_values_are_read_through_a_map_and_still_fully_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let chest = persistent(&path);
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    chest.insert("big".into(), big.clone()).unwrap();
    chest.close().unwrap();
    let chest = persistent(&path);
    assert_eq!(chest.get(&"big".into()).unwrap().as_deref(), Some(&big));
    drop(chest);
    let file = value_files(&path).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2 << 20] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let chest = persistent(&path);
    assert!(matches!(
        chest.get(&"big".into()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn read_only_handles_map_arrays_and_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let a = sample(Ix1(10), |i| i as i32);
    persistent(&path).insert_array("a".into(), &a).unwrap();
    let ro: Store = Chest::builder().path(&path).read_only().open().unwrap();
    assert_eq!(
        ro.get_array::<i32, Ix1>(&"a".into())
            .unwrap()
            .unwrap()
            .view(),
        a
    );
    assert!(matches!(
        ro.insert_array("b".into(), &a),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.create_array::<i32, Ix1>("b".into(), 3),
        Err(Error::ReadOnly { .. })
    ));
}

#[test]
fn a_reader_beside_a_writer_maps_new_arrays_and_sees_removed_ones_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = persistent(&path);
    let a = sample(Ix1(10), |i| i as i32);
    writer.insert_array("a".into(), &a).unwrap();
    let ro: Store = Chest::builder().path(&path).read_only().open().unwrap();
    let view = ro.get_array::<i32, Ix1>(&"a".into()).unwrap().unwrap();
    // An array stored after the reader opened: a miss refreshes.
    let b = sample(Ix1(5), |i| -(i as i64));
    writer.insert_array("b".into(), &b).unwrap();
    let got = ro.get_array::<i64, Ix1>(&"b".into()).unwrap().unwrap();
    assert_eq!(got.view(), b);
    // Removed by the writer (on disk once its queued removal is done: the flush waits for
    // it): gone for the reader too, without a refresh; its view lives on.
    assert!(writer.remove(&"a".into()).unwrap());
    writer.flush().unwrap();
    assert!(ro.contains_key(&"a".into()));
    assert!(ro.get_array::<i32, Ix1>(&"a".into()).unwrap().is_none());
    assert!(!ro.contains_key(&"a".into()));
    assert_eq!(view.view(), a);
    writer.close().unwrap();
}

#[test]
fn arrays_replace_values_without_touching_callers_arcs_or_the_budget() {
    let chest: Store = Chest::builder()
        .budget(1 << 20)
        .compression(spillchest::Compression::Lz4)
        .open()
        .unwrap();
    chest.insert("k".into(), vec![3; 1000]).unwrap();
    let held = chest.get(&"k".into()).unwrap().unwrap();
    assert!(chest.stats().memory_bytes > 0);
    // Zeros compress well, but arrays are stored raw: the view maps the elements as they are.
    let zeros = Array::<u64, _>::zeros((512, 512));
    chest.insert_array("k".into(), &zeros).unwrap();
    assert_eq!(chest.stats().memory_bytes, 0);
    assert_eq!(*held, vec![3; 1000]);
    let view = chest.get_array::<u64, Ix2>(&"k".into()).unwrap().unwrap();
    assert_eq!(view.view(), zeros);
    assert!(std::fs::metadata(view.path()).unwrap().len() > 512 * 512 * 8);
    // Plain values, compressed or not, still round-trip beside arrays.
    let big = vec![9u8; 4 << 20];
    chest.insert("big".into(), big.clone()).unwrap();
    chest.insert("filler".into(), vec![1; 900_000]).unwrap();
    assert_eq!(chest.get(&"big".into()).unwrap().as_deref(), Some(&big));
    // Back to a plain value: the old view keeps its bytes.
    chest.insert("k".into(), vec![4]).unwrap();
    assert_eq!(chest.get(&"k".into()).unwrap().as_deref(), Some(&vec![4]));
    assert_eq!(view.view().sum(), 0);
}

#[test]
fn a_writer_and_inserts_of_the_same_key_do_not_disturb_each_other() {
    let chest = Store::with_budget(1 << 20).unwrap();
    let mut writer = chest.create_array::<f32, Ix1>("k".into(), 1 << 18).unwrap();
    writer.as_slice_mut().fill(1.5);
    let other = sample(Ix1(1 << 18), |i| i as f32);
    chest.insert_array("k".into(), &other).unwrap();
    let inserted = chest.get_array::<f32, Ix1>(&"k".into()).unwrap().unwrap();
    writer.as_array_mut()[0] = 2.5;
    writer.commit().unwrap();
    let committed = chest.get_array::<f32, Ix1>(&"k".into()).unwrap().unwrap();
    assert_eq!(committed.view()[0], 2.5);
    assert_eq!(committed.view()[1], 1.5);
    assert_eq!(inserted.view(), other);
    committed.verify().unwrap();
    inserted.verify().unwrap();
    assert_eq!(chest.len(), 1);
    assert_eq!(chest.stats().files, 1);
}
