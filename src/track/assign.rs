//! Optimal assignment (Hungarian method, O(n³)) with a gate: pairs whose cost exceeds `max_cost`
//! are never matched.
// index loops read more clearly than iterator chains in small dense linear algebra
#![allow(clippy::needless_range_loop)]

/// Minimum-cost matching of rows to columns of `cost` (row-major, `rows × cols`). Returns the
/// matched (row, col) pairs with cost ≤ `max_cost`, and the unmatched rows and columns.
pub fn assign(
    cost: &[f32],
    rows: usize,
    cols: usize,
    max_cost: f32,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    if rows == 0 || cols == 0 {
        return (vec![], (0..rows).collect(), (0..cols).collect());
    }
    // costs above the gate are made prohibitive so the solver avoids them where it can
    let big = 1e6f64;
    let at = |r: usize, c: usize| {
        let v = cost[r * cols + c] as f64;
        if v > max_cost as f64 || !v.is_finite() {
            big
        } else {
            v
        }
    };
    let transposed = rows > cols;
    let (n, m) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let a = |i: usize, j: usize| if transposed { at(j, i) } else { at(i, j) };
    // e-maxx Hungarian: 1-based potentials u (rows), v (cols), p[j] = row matched to column j
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = a(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut pairs = Vec::new();
    for j in 1..=m {
        if p[j] != 0 {
            let (r, c) = if transposed {
                (j - 1, p[j] - 1)
            } else {
                (p[j] - 1, j - 1)
            };
            if cost[r * cols + c] <= max_cost {
                pairs.push((r, c));
            }
        }
    }
    pairs.sort_unstable();
    let un_r = (0..rows)
        .filter(|r| !pairs.iter().any(|p| p.0 == *r))
        .collect();
    let un_c = (0..cols)
        .filter(|c| !pairs.iter().any(|p| p.1 == *c))
        .collect();
    (pairs, un_r, un_c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_optimum_not_the_greedy_choice() {
        // greedy would take (0,0)=1 then (1,1)=10: total 11; optimum is (0,1)+(1,0) = 2+2
        let c = [1.0, 2.0, 2.0, 10.0];
        let (pairs, ur, uc) = assign(&c, 2, 2, 100.0);
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
        assert!(ur.is_empty() && uc.is_empty());
    }

    #[test]
    fn gates_and_rectangles() {
        // 3 rows, 2 cols; row 2 only matches col 0 cheaply but row 0 wants it too
        let c = [0.1, 0.9, 5.0, 5.0, 0.2, 5.0];
        let (pairs, ur, uc) = assign(&c, 3, 2, 1.0);
        assert_eq!(pairs, vec![(0, 1), (2, 0)]);
        assert_eq!(ur, vec![1]);
        assert!(uc.is_empty());
        let (pairs, ur, _) = assign(&[5.0], 1, 1, 1.0);
        assert!(pairs.is_empty() && ur == vec![0]);
    }
}
