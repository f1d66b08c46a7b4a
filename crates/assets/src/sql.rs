//! The [`AssetStore`](nodetool_core::AssetStore) methods, written once for both backends: every
//! statement goes through `sqlx::QueryBuilder`, which writes each backend's own placeholders, so
//! the SQLite and PostgreSQL stores cannot drift apart.

/// Implements `AssetStore` for `$store` (which has `async fn pool(&self) -> Result<&Pool<$db>>`)
/// over the `nodetool_assets` table; `$ts` maps a timestamp to what the backend keeps.
macro_rules! asset_store_sql {
    ($store:ty, $db:ty, $ts:path) => {
        #[async_trait::async_trait]
        impl nodetool_core::AssetStore for $store {
            async fn create(&self, r: &nodetool_core::AssetRecord) -> nodetool_core::Result<()> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO nodetool_assets (id, user_id, workflow_id, parent_id, name, \
                     content_type, size, metadata, duration, node_id, job_id, storage_key, \
                     created_at, updated_at) VALUES (",
                );
                let mut values = qb.separated(", ");
                values
                    .push_bind(&r.id)
                    .push_bind(&r.user_id)
                    .push_bind(&r.workflow_id)
                    .push_bind(&r.parent_id)
                    .push_bind(&r.name)
                    .push_bind(&r.content_type)
                    .push_bind(r.size)
                    .push_bind(r.metadata.as_ref().map(|m| m.to_string()))
                    .push_bind(r.duration)
                    .push_bind(&r.node_id)
                    .push_bind(&r.job_id)
                    .push_bind(&r.storage_key)
                    .push_bind($ts(r.created_at))
                    .push_bind($ts(r.updated_at));
                qb.push(")");
                qb.build()
                    .execute(self.pool().await?)
                    .await
                    .map_err(|e| $crate::db_err("assets.create")(e).with_context("asset", &r.id))?;
                Ok(())
            }

            async fn get(
                &self,
                user_id: &str,
                id: &str,
            ) -> nodetool_core::Result<Option<nodetool_core::AssetRecord>> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("SELECT * FROM nodetool_assets WHERE id = ");
                qb.push_bind(id).push(" AND user_id = ").push_bind(user_id);
                let row: Option<$crate::Row> = qb
                    .build_query_as()
                    .fetch_optional(self.pool().await?)
                    .await
                    .map_err(|e| $crate::db_err("assets.get")(e).with_context("asset", id))?;
                Ok(row.map(nodetool_core::AssetRecord::from))
            }

            async fn list(
                &self,
                q: &nodetool_core::AssetQuery,
            ) -> nodetool_core::Result<nodetool_core::AssetPage> {
                let limit = q.limit.max(1);
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT * FROM nodetool_assets WHERE user_id = ",
                );
                qb.push_bind(&q.user_id);
                for (column, value) in [
                    ("parent_id", &q.parent_id),
                    ("workflow_id", &q.workflow_id),
                    ("node_id", &q.node_id),
                    ("job_id", &q.job_id),
                ] {
                    if let Some(v) = value {
                        qb.push(format_args!(" AND {column} = ")).push_bind(v);
                    }
                }
                if let Some(ct) = &q.content_type {
                    qb.push(" AND content_type LIKE ")
                        .push_bind($crate::like_prefix(ct))
                        .push(" ESCAPE '\\'");
                }
                if let Some(cursor) = q.cursor.as_deref().filter(|c| !c.is_empty()) {
                    qb.push(" AND id > ").push_bind(cursor);
                }
                // One more than asked tells whether there is a next page.
                qb.push(" ORDER BY id LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
                let rows: Vec<$crate::Row> = qb
                    .build_query_as()
                    .fetch_all(self.pool().await?)
                    .await
                    .map_err($crate::db_err("assets.list"))?;
                Ok($crate::page(rows, limit))
            }

            async fn update(&self, r: &nodetool_core::AssetRecord) -> nodetool_core::Result<()> {
                let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE nodetool_assets SET name = ");
                qb.push_bind(&r.name)
                    .push(", parent_id = ")
                    .push_bind(&r.parent_id)
                    .push(", content_type = ")
                    .push_bind(&r.content_type)
                    .push(", metadata = ")
                    .push_bind(r.metadata.as_ref().map(|m| m.to_string()))
                    .push(", updated_at = ")
                    .push_bind($ts(r.updated_at))
                    .push(" WHERE id = ")
                    .push_bind(&r.id)
                    .push(" AND user_id = ")
                    .push_bind(&r.user_id);
                let done =
                    qb.build().execute(self.pool().await?).await.map_err(|e| {
                        $crate::db_err("assets.update")(e).with_context("asset", &r.id)
                    })?;
                if done.rows_affected() == 0 {
                    return Err(nodetool_core::Error::not_found("no such asset")
                        .with_operation("assets.update")
                        .with_context("asset", &r.id));
                }
                Ok(())
            }

            async fn delete(&self, user_id: &str, id: &str) -> nodetool_core::Result<bool> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("DELETE FROM nodetool_assets WHERE id = ");
                qb.push_bind(id).push(" AND user_id = ").push_bind(user_id);
                let done =
                    qb.build().execute(self.pool().await?).await.map_err(|e| {
                        $crate::db_err("assets.delete")(e).with_context("asset", id)
                    })?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

pub(crate) use asset_store_sql;
